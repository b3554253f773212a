"""The `base` preset's denoiser: Whisper-base's pretrained decoder, taught uniform-noise diffusion.

The sequence is Whisper's own prompt (P = 4 tokens: start, language, transcribe, no-timestamps)
followed by the canvas (L tokens: the transcript, then end-of-text to the end). The prompt stays
causal, as pretrained; every canvas position sees the prompt and the whole canvas (bidirectional),
and cross-attends to the frozen encoder's frames.

Read-out ("shift", the default, as in AR-to-diffusion adaptations such as DiffuGPT): the hidden
state at sequence position j predicts the token at j + 1, which is the pretrained head's own job;
canvas position i is read at sequence position P - 1 + i (the last prompt token predicts canvas
token 0). "In place" (`shift = False`) reads canvas position i at its own position P + i.

The same weights run causally over prompt + clean canvas for the autoregressive auxiliary loss
(Whisper's own objective, which keeps what it knows). Only LoRA adapters (peft) on the attention
and MLP projections and the LayerNorms are trained; the frozen weights load from the installed
package, so a checkpoint holds a few MB.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from .encoder import whisper_base_dir
from .whisper_decoder import WhisperDecoder, WhisperTokens

WEIGHTS_FILE = "denoiser.safetensors"
VOCAB_FILE = "vocab.safetensors"


TOKENIZERS = ("repaired", "as-shipped")  # DenoiserConfig.tokenizer


@dataclass(frozen=True)
class DenoiserConfig:
    rank: int = 16  # LoRA rank; 0: no adapters (all decoder weights train, the comparison run)
    alpha: int = 32
    targets: tuple[str, ...] = ("qkv", "out", "q", "fc1", "fc2")  # not cross-attn kv: cached per clip
    shift: bool = True  # read canvas token i at position P-1+i (pretrained next-token head)
    train_norms: bool = True
    # Whisper's tokenizer.json "repaired" (its lost first merge restored: whisper_decoder.missing_merges)
    # or "as-shipped". A checkpoint's vocabulary and targets were made with one of them; settings
    # written before the choice existed name none and were made as shipped.
    tokenizer: str = "repaired"

    @classmethod
    def from_dict(cls, d: dict) -> DenoiserConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ModelError(f"unknown denoiser settings: {', '.join(sorted(unknown))}")
        tokenizer = d.get("tokenizer", "as-shipped")
        if tokenizer not in TOKENIZERS:
            raise ModelError(f"denoiser setting tokenizer must be 'repaired' or 'as-shipped', not {tokenizer!r}")
        return cls(**{**d, "targets": tuple(d.get("targets", cls.targets)), "tokenizer": tokenizer})


def canvas_mask(P: int, L: int, causal: bool = False, device=None) -> torch.Tensor:
    """Self-attention mask (P+L, P+L), True = may attend: the prompt causal; the canvas
    bidirectional over prompt and canvas (`causal`: the whole sequence causal, for the AR pass)."""
    n = P + L
    m = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    if not causal:
        m[P:, :] = True
    return m


class WhisperDenoiser(nn.Module):
    """Canvas tokens are Whisper text tokens and end-of-text: ids in [0, vocab_size)."""

    def __init__(
        self,
        config: DenoiserConfig = DenoiserConfig(),
        whisper_dir: Path | None = None,
        vocab: dict[str, torch.Tensor] | None = None,
    ):
        super().__init__()
        # Per language, the sorted token ids its text uses (+ end-of-text): the canvas alphabet,
        # the uniform prior's support and the output layer (22k ids for English, 1.5k for Chinese,
        # instead of 51,865), which also keeps each language in its own script.
        self.vocab = vocab or {}
        d = whisper_base_dir() if whisper_dir is None else Path(whisper_dir)
        self.config = config
        self.whisper_dir = d
        self.decoder = WhisperDecoder.from_ct2(d)
        self._released: list[WhisperDecoder] = []  # a list: not a submodule, so not in state_dict
        # language -> "adapted" | "whisper" | "ensemble": `auto`'s choice
        self.verifier_by_language: dict[str, str] = {}
        self.tokens = WhisperTokens(d, repair=config.tokenizer == "repaired")
        self.vocab_size = self.tokens.eot + 1  # text tokens + end-of-text (also the canvas padding)
        for p in self.decoder.parameters():
            p.requires_grad_(config.rank == 0)
        if config.rank > 0:
            from peft import LoraConfig, inject_adapter_in_model

            lora = LoraConfig(
                r=config.rank, lora_alpha=config.alpha, target_modules=list(config.targets), lora_dropout=0.0
            )
            inject_adapter_in_model(lora, self.decoder)
        if config.train_norms:
            for name, p in self.decoder.named_parameters():
                if "norm" in name:
                    p.requires_grad_(True)

    # ------------------------------------------------------------------ passes

    def memory(self, feats: list, released: bool = False) -> tuple[list, torch.Tensor]:
        """Cross-attention keys/values of a batch of encoder features (list of (F_i, D)), zero-padded
        to the longest, and the frame mask (B, 1, 1, F) marking real frames; `released`: for the
        released decoder (`released()`)."""
        F = max(f.shape[0] for f in feats)
        mem = torch.zeros(len(feats), F, feats[0].shape[1])
        mask = torch.zeros(len(feats), 1, 1, F, dtype=torch.bool)
        for i, f in enumerate(feats):
            mem[i, : f.shape[0]] = torch.as_tensor(np.asarray(f, np.float32) if not torch.is_tensor(f) else f.float())
            mask[i, ..., : f.shape[0]] = True
        with torch.no_grad():  # frozen projections of frozen features: no gradient, computed once per clip
            return (self.released() if released else self.decoder).cross_kv(mem), mask

    def eot_index(self, language: str) -> int:
        """Where end-of-text sits in `language`'s vocabulary: its id in the canvas index space."""
        return int(torch.searchsorted(self.vocab[language], torch.tensor(self.tokens.eot)))

    def prompts(self, languages: list[str]) -> torch.Tensor:
        return torch.tensor([self.tokens.prompt(lang) for lang in languages])

    def verifier(self, language: str, choice: str = "auto") -> str:
        """Which decoder verifies `language`'s drafts: "adapted" (this one, run causally, over the
        unpadded features it was trained on), "whisper" (`released()`, over Whisper's 30-s padded
        window) or "ensemble" (both, their log-probabilities averaged); "auto": the model's measured
        choice for the language (adapted where it names none)."""
        return self.verifier_by_language.get(language, "adapted") if choice == "auto" else choice

    def released(self) -> WhisperDecoder:
        """Whisper-base's decoder as released (built on first use): the verifier that keeps all Whisper
        heard in 680k hours, where the adapters saw little of a language. It shares the token embedding
        and the cross-attention key/value projections with `decoder` when adapters leave them
        untouched, so it adds the layers alone (~22 M floats)."""
        if not self._released:
            d = WhisperDecoder.from_ct2(self.whisper_dir)
            if self.config.rank > 0:
                d.embed = self.decoder.embed
                for mine, theirs in zip(d.layers, self.decoder.layers):
                    mine.cross_attn.kv = theirs.cross_attn.kv
            self._released.append(d.requires_grad_(False).eval())
        return self._released[0]

    def _run(self, prompts, canvas, kv, frame_mask, causal: bool, shift: bool, vocab=None, hidden=False, dec=None):
        P, L = prompts.shape[1], canvas.shape[1]
        dec = self.decoder if dec is None else dec
        h = dec(torch.cat([prompts, canvas], 1), kv, canvas_mask(P, L, causal), frame_mask)
        h = h[:, P - 1 : P - 1 + L] if shift else h[:, P:]
        if hidden:
            return h
        return dec.logits(h, torch.arange(self.vocab_size) if vocab is None else vocab)

    def denoise(
        self, prompts: torch.Tensor, canvas: torch.Tensor, kv, frame_mask, vocab=None, hidden: bool = False
    ) -> torch.Tensor:
        """Denoiser logits (B, L, V) for a canvas (B, L) after prompts (B, P); V = vocab_size (or
        len(vocab) when the output layer is restricted to the ids in `vocab`). `hidden`: the
        read-out states (B, L, D) instead, for a caller that scores only some positions."""
        return self._run(prompts, canvas, kv, frame_mask, False, self.config.shift, vocab, hidden)

    def autoregressive(
        self,
        prompts: torch.Tensor,
        text: torch.Tensor,
        kv,
        frame_mask,
        vocab=None,
        hidden: bool = False,
        released: bool = False,
    ) -> torch.Tensor:
        """Teacher-forced causal logits (B, L, V): position i predicts text token i (always shifted).
        `released`: the released decoder's (`released()`; kv from `memory(..., released=True)`)."""
        dec = self.released() if released else self.decoder
        return self._run(prompts, text, kv, frame_mask, True, True, vocab, hidden, dec)

    def autoregressive_from(
        self,
        prompts: torch.Tensor,
        text: torch.Tensor,
        kv,
        frame_mask,
        start: int,
        past: list,
        released: bool = False,
    ) -> torch.Tensor:
        """`autoregressive(..., hidden=True)`'s states (B, L - start, D) of text positions start.. only.
        `past`: per layer [k, v], the causal self-attention keys/values of the inputs before
        (B, H, P - 1 + start, D/H: prompt + text[:start - 1]), or [None, None] (none kept: every input
        is read); extended in place to all P + L - 1 inputs."""
        c = 0 if past[0][0] is None else prompts.shape[1] - 1 + start
        x = torch.cat([prompts, text[:, :-1]], 1)  # position i is read out where token i-1 was fed
        mask = torch.ones(x.shape[1] - c, x.shape[1], dtype=torch.bool).tril(c)
        dec = self.released() if released else self.decoder
        h = dec(x[:, c:], kv, mask, frame_mask, offset=c, past=past)
        return h[:, prompts.shape[1] - 1 + start - c :]

    def merge_adapters(self) -> WhisperDenoiser:
        """For inference: fold the LoRA products into the frozen weights (peft's merge), so a pass
        runs plain Linear layers (about 15 % faster on a CPU). The adapter tensors stay as they are,
        so `trained_state_dict` still saves them; training a merged model is not supported."""
        from peft.tuners.lora import LoraLayer

        with torch.no_grad():
            for m in self.decoder.modules():
                if isinstance(m, LoraLayer) and not m.merged:
                    m.merge()
        return self

    # ------------------------------------------------------------------ checkpoint of the trained part

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.decoder.named_parameters() if p.requires_grad}
        return {
            k: v.detach().to(torch.float16).contiguous() for k, v in self.decoder.state_dict().items() if k in names
        }

    def n_trained(self) -> int:
        return sum(p.numel() for p in self.decoder.parameters() if p.requires_grad)

    def load_trained(self, path: Path) -> None:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for a bad header
            raise ModelError(f"{path}: unreadable denoiser weights ({e})") from None
        own = dict(self.decoder.named_parameters())
        for k, v in state.items():
            if k not in own:
                raise ModelError(f"{path}: unexpected tensor {k!r} (does config.json match the weights?)")
            if own[k].shape != v.shape:
                raise ModelError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
            with torch.no_grad():
                own[k].copy_(v.float())

    def save_trained(self, directory: Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save_vocab(directory)
        tmp = directory / (WEIGHTS_FILE + ".tmp")
        save_file(self.trained_state_dict(), str(tmp))
        tmp.replace(directory / WEIGHTS_FILE)
        return directory / WEIGHTS_FILE

    def save_vocab(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.to(torch.int32).contiguous() for k, v in self.vocab.items()}, str(Path(directory) / VOCAB_FILE))

    def load_vocab(self, path: Path) -> None:
        from safetensors.torch import load_file

        try:
            self.vocab = {k: v.long() for k, v in load_file(str(path)).items()}
        except Exception as e:
            raise ModelError(f"{path}: unreadable vocabulary ({e})") from None
        self.restrict_scripts()

    def restrict_scripts(self) -> None:
        """Hindi's alphabet keeps only Devanagari-script tokens (+ end-of-text): its sentence files
        quote dialogue and mix in Latin words, and a canvas that may hold quotation marks gets runs
        of them (`WhisperTokens.devanagari_tokens`)."""
        if "hi" in self.vocab:
            keep = torch.tensor(self.tokens.devanagari_tokens() + [self.tokens.eot], dtype=self.vocab["hi"].dtype)
            self.vocab["hi"] = self.vocab["hi"][torch.isin(self.vocab["hi"], keep)]

    def settings(self) -> dict:
        return {**asdict(self.config), "targets": list(self.config.targets)}
