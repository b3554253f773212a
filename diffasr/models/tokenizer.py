"""Tokenizers: the compact multilingual BPE of the `small` preset, and the Gemma tokenizer of `gemma-26b`.

Both expose the same small interface: special ids as named properties, `encode`/`decode` of
transcript text, `prompt_ids(n_audio, language)` for the encoder prompt, and save/load into a
checkpoint directory.

The compact BPE is trained with `tokenizers` on the training sentences. Its targets are in a
"spoken" form: NFKC, lower case, punctuation removed (apostrophes inside words kept). A small
CPU-trained model learns that form much faster than cased, punctuated text, and WER/CER scoring
normalises case and punctuation anyway. The form is recorded in the checkpoint (`text_form`);
the form itself, the languages and their scripts are diffasr/text.py.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from ..errors import ModelError
from ..text import LANGUAGE_NAMES, LANGUAGES, SCRIPTS, spoken_form

# Fixed ids 0..: pad doubles as the CTC blank (it never occurs inside a transcript).
SPECIALS = ["<pad>", "<eos>", "<bos>", "<sep>", "<audio>", "<unk>", "<|auto|>"] + [f"<|{l}|>" for l in LANGUAGES]


class Tokenizer:
    """Interface shared by both presets' tokenizers."""

    kind: str
    text_form: str  # "spoken" (lower case, no punctuation) or "raw"

    pad: int
    eos: int
    bos: int
    sep: int
    audio: int  # placeholder id whose embeddings are replaced by projected audio
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def prompt_ids(self, n_audio: int, language: str | None) -> list[int]:
        raise NotImplementedError

    def save(self, directory: Path) -> dict:
        """Write tokenizer files into `directory`; return the dict that config.json stores."""
        raise NotImplementedError

    def script_mask(self, language: str):
        """Bool tensor (vocab_size,): tokens that can occur in `language`'s text. A token is ruled out
        when it holds a letter of another script (Latin for en/de/fr/es, Devanagari for hi, CJK for
        zh); specials and letter-free tokens stay. Cached per language."""
        cache = self.__dict__.setdefault("_script_masks", {})
        if language not in cache:
            import torch

            want = SCRIPTS[language]
            strings = self.token_strings(range(self.vocab_size))
            mask = torch.tensor([_in_script(t, want) for t in strings], dtype=torch.bool)
            mask[[self.pad, self.eos]] = True  # the CTC blank and the end of the transcript
            cache[language] = mask
        return cache[language]


def _in_script(token: str, script: str) -> bool:
    for ch in token:  # letters and combining marks (Devanagari vowel signs are marks, not letters)
        if unicodedata.category(ch)[0] in "LM" and not unicodedata.name(ch, "").startswith(script):
            return False
    return True


class BPETokenizer(Tokenizer):
    """Compact BPE (`tokenizers`), Metaspace pre-tokenisation, SPECIALS at ids 0..len(SPECIALS)-1."""

    kind = "bpe"

    def __init__(self, tok, text_form: str = "spoken"):
        self.tok = tok
        self.text_form = text_form
        ids = {s: tok.token_to_id(s) for s in SPECIALS}
        if any(ids[s] != i for i, s in enumerate(SPECIALS)):
            raise ModelError("tokenizer special tokens are not at the expected ids")
        self.pad, self.eos, self.bos, self.sep, self.audio, self.unk, self.auto = range(7)
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def train(cls, sentences, vocab_size: int = 5000, limit_alphabet: int = 2500) -> BPETokenizer:
        """Train on an iterable of raw sentences (they are put in spoken form first)."""
        from tokenizers import Tokenizer as HFTok
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTok(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, limit_alphabet=limit_alphabet, show_progress=False
        )
        tok.train_from_iterator((spoken_form(s) for s in sentences), trainer=trainer)
        return cls(tok)

    def lang_id(self, language: str | None) -> int:
        if language is None:
            return self.auto
        tid = self.tok.token_to_id(f"<|{language}|>")
        if tid is None:
            raise ModelError(f"language {language!r} not supported (choose from {', '.join(LANGUAGES)})")
        return tid

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(spoken_form(text) if self.text_form == "spoken" else text).ids

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids if int(i) >= len(SPECIALS)]
        return self.tok.decode(ids).strip()

    def token_strings(self, ids) -> list[str]:
        return [self.tok.id_to_token(int(i)) or "" for i in ids]

    def prompt_ids(self, n_audio: int, language: str | None) -> list[int]:
        """[bos, <|lang|> or <|auto|>, audio × n_audio, sep]."""
        return [self.bos, self.lang_id(language)] + [self.audio] * n_audio + [self.sep]

    def save(self, directory: Path) -> dict:
        self.tok.save(str(Path(directory) / "tokenizer.json"))
        return {"kind": self.kind, "file": "tokenizer.json", "text_form": self.text_form, "vocab_size": self.vocab_size}

    @classmethod
    def load(cls, directory: Path, cfg: dict) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTok

        path = Path(directory) / cfg.get("file", "tokenizer.json")
        if not path.is_file():
            raise ModelError(f"{directory}: checkpoint lacks {path.name}")
        try:
            hf = HFTok.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception for unreadable files
            raise ModelError(f"{directory}: {path.name} is not a readable tokenizer ({e})") from None
        return cls(hf, cfg.get("text_form", "spoken"))


class GemmaTokenizer(Tokenizer):
    """DiffusionGemma's own tokenizer (262k vocab) for the frozen 26B preset.

    The prompt follows the reference: bos, a plain-text instruction naming the language,
    begin-of-audio, audio placeholders, end-of-audio. Ids come from the checkpoint config.
    """

    kind = "gemma"

    def __init__(self, hf_tokenizer, ids: dict, text_form: str = "raw"):
        self.hf, self.ids, self.text_form = hf_tokenizer, dict(ids), text_form
        self.pad, self.eos, self.bos = ids["pad"], ids["eos"], ids["bos"]
        self.sep, self.audio, self.boa = ids["eoa"], ids["audio"], ids["boa"]
        self.vocab_size = ids["vocab_size"]

    @classmethod
    def from_pretrained(cls, name: str, ids: dict) -> GemmaTokenizer:
        from transformers import AutoTokenizer

        try:
            return cls(AutoTokenizer.from_pretrained(name), ids)
        except Exception as e:
            raise ModelError(f"cannot load tokenizer {name!r}: {e}") from None

    def encode(self, text: str) -> list[int]:
        text = spoken_form(text) if self.text_form == "spoken" else text
        return self.hf(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True).strip()

    def token_strings(self, ids) -> list[str]:
        return self.hf.convert_ids_to_tokens([int(i) for i in ids])

    def prompt_ids(self, n_audio: int, language: str | None) -> list[int]:
        name = LANGUAGE_NAMES.get(language or "", "the spoken language")
        instr = self.encode(f"Transcribe this audio in {name}.")
        return [self.bos] + instr + [self.boa] + [self.audio] * n_audio + [self.sep]

    def save(self, directory: Path) -> dict:
        self.hf.save_pretrained(str(directory))
        return {"kind": self.kind, "ids": self.ids, "text_form": self.text_form, "vocab_size": self.vocab_size}


def load_tokenizer(directory: Path, cfg: dict) -> Tokenizer:
    if cfg["kind"] == "bpe":
        return BPETokenizer.load(directory, cfg)
    if cfg["kind"] == "gemma":
        return GemmaTokenizer(
            __import__("transformers").AutoTokenizer.from_pretrained(str(directory)),
            cfg["ids"],
            cfg.get("text_form", "raw"),
        )
    raise ModelError(f"unknown tokenizer kind {cfg['kind']!r}")


def save_json(path: Path, obj) -> None:
    """Atomic JSON write (temp file + rename)."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
