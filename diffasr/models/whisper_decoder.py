"""Whisper-base's own text decoder in torch, read from the CTranslate2 model.bin we already install.

The `base` preset uses it as the denoiser: the same pretrained weights run causally (Whisper's
autoregressive decoding, the AR auxiliary loss) or with a canvas mask (prompt causal, canvas
bidirectional: the diffusion denoiser). Cross-attention reads the frozen encoder's features
(B, F, 512), whose keys/values are computed once per clip (`cross_kv`) and reused by every step.

`read_ct2` is the reader of CTranslate2's binary format (version 6, what ctranslate2 ≥ 3 writes):

    uint32 binary_version; [v ≥ 2] string spec_name, uint32 spec_revision
    uint32 n_variables, then per variable:
        string name; uint8 rank; uint32 dims[rank]; [v ≥ 4] uint8 dtype; uint32 n_bytes; bytes data
    uint32 n_aliases, then per alias: string alias; string target
    (string = uint16 length incl. the NUL, then the bytes)

dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Whisper-base stores the whole
model in float16; its output projection is an alias of the token embedding (tied).
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ..text import word_separator

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 model.bin whose names start with `prefix` (aliases resolved).

    Arrays are copies (the file is memory-mapped only while reading). Raises ModelError on a file
    that is not this format."""
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as b:
            return _parse(b, prefix)
    except (OSError, ValueError, struct.error, KeyError) as e:
        raise ModelError(f"{path}: not a readable CTranslate2 model.bin ({e})") from None


def _parse(b, prefix: str) -> dict[str, np.ndarray]:
    o = 0

    def take(fmt: str):
        nonlocal o
        v = struct.unpack_from(fmt, b, o)[0]
        o += struct.calcsize(fmt)
        return v

    def string() -> str:
        nonlocal o
        n = take("<H")
        o += n
        return bytes(b[o - n : o]).rstrip(b"\0").decode()

    version = take("<I")
    if not 1 <= version <= 6:
        raise ValueError(f"binary version {version}")
    if version >= 2:
        string(), take("<I")  # spec name, revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = string()
        dims = [take("<I") for _ in range(take("<B"))]
        dtype = _DTYPES[take("<B")] if version >= 4 else np.float32
        n = take("<I")
        if name.startswith(prefix):
            out[name] = (
                np.frombuffer(b, dtype=dtype, count=n // np.dtype(dtype).itemsize, offset=o).reshape(dims).copy()
            )
        o += n
    if version >= 3:
        for _ in range(take("<I")):
            alias, target = string(), string()
            if alias.startswith(prefix) and target in out:
                out[alias] = out[target]
    return out


@dataclass(frozen=True)
class WhisperDecoderConfig:
    vocab: int = 51865
    dim: int = 512
    heads: int = 8
    layers: int = 6
    max_positions: int = 448


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, cross: bool):
        super().__init__()
        self.heads, self.cross = heads, cross
        self.norm = nn.LayerNorm(dim)
        if cross:
            self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)  # kv: frozen, cached per clip
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, H, T, D/H)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x, mask=None, kv=None, past=None):
        """x (B, T, D); self: mask over (T, T), or (T, c + T) after `past`, a [k, v] pair (B, H, c, D/H)
        of the c positions before x (or [None, None]), which is then replaced by all c + T positions';
        cross: kv from `cross_kv`, mask (B, 1, 1, F) over frames."""
        h = self.norm(x)
        if self.cross:
            q, (k, v) = self._split(self.q(h)), kv
        else:
            q, k, v = (self._split(t) for t in self.qkv(h).chunk(3, dim=-1))
            if past is not None:
                if past[0] is not None:
                    k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
                past[:] = [k, v]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return x + self.out(a.transpose(1, 2).flatten(2))


class _Layer(nn.Module):
    def __init__(self, c: WhisperDecoderConfig):
        super().__init__()
        self.self_attn = _Attention(c.dim, c.heads, cross=False)
        self.cross_attn = _Attention(c.dim, c.heads, cross=True)
        self.ffn_norm = nn.LayerNorm(c.dim)
        self.fc1, self.fc2 = nn.Linear(c.dim, 4 * c.dim), nn.Linear(4 * c.dim, c.dim)

    def forward(self, x, mask, kv, frame_mask=None, past=None):
        x = self.cross_attn(self.self_attn(x, mask, past=past), frame_mask, kv=kv)
        return x + self.fc2(F.gelu(self.fc1(self.ffn_norm(x))))


class WhisperDecoder(nn.Module):
    """Whisper's pre-norm text decoder (6 × 512 for base), tied output embedding.

    `forward(tokens (B, T), kv, mask) -> hidden (B, T, D)`; `logits(hidden, vocab=None) -> (B, T, V)`
    with V the full vocabulary or the ids in `vocab` (a language's script: a smaller output layer).
    `mask` is an SDPA mask: bool (T, T) or (B, 1, T, T), True = may attend; None = bidirectional.
    `frame_mask` (B, 1, 1, F) bool marks the real encoder frames of a padded batch (None: all real).
    """

    def __init__(self, config: WhisperDecoderConfig = WhisperDecoderConfig()):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.dim)
        self.register_buffer("positions", torch.zeros(config.max_positions, config.dim), persistent=False)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (k, v), each (B, H, F, D/H), from encoder features `memory` (B, F, D)."""
        out = []
        for layer in self.layers:
            att = layer.cross_attn
            k, v = att.kv(memory).chunk(2, dim=-1)
            out.append((att._split(k), att._split(v)))
        return out

    def forward(
        self, tokens: torch.Tensor, kv, mask=None, frame_mask=None, offset: int = 0, past: list | None = None
    ) -> torch.Tensor:
        """Hidden states (B, T, D) of `tokens` at positions offset.. . `past` (causal passes): per layer
        a [k, v] pair of the self-attention keys/values (B, H, offset, D/H) of the positions before
        (or [None, None] when offset is 0), extended in place to offset + T; `mask` is then (T, offset + T)."""
        T = tokens.shape[1]
        x = self.embed(tokens) + self.positions[offset : offset + T]
        for i, (layer, layer_kv) in enumerate(zip(self.layers, kv)):
            x = layer(x, mask, layer_kv, frame_mask, None if past is None else past[i])
        return self.norm(x)

    def logits(self, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        return hidden @ self._output_rows(vocab).T

    def _output_rows(self, vocab: torch.Tensor | None) -> torch.Tensor:
        """The (tied) output layer's rows for `vocab` (|V|, D). Without gradients the gathered rows are
        kept per vocabulary (keyed by its storage and the weight's version): gathering 22k × 512
        floats per call was a third of a decoding pass."""
        w = self.embed.weight
        if vocab is None:
            return w
        if torch.is_grad_enabled() and w.requires_grad:
            return w[vocab]
        key = (vocab.data_ptr(), vocab.numel(), w.data_ptr(), w._version)
        cache = self.__dict__.setdefault("_rows_cache", {})
        if key not in cache:
            if len(cache) >= 8:  # one entry per language in use; bounded for callers with ad-hoc vocabularies
                cache.clear()
            cache[key] = (vocab, w[vocab])  # holding `vocab` keeps its storage (and the key) valid
        return cache[key][1]

    @classmethod
    def from_ct2(cls, model_dir: Path, dtype=torch.float32) -> WhisperDecoder:
        """Build and fill the decoder from `model_dir`/model.bin (+ config.json for the head count)."""
        w = read_ct2(Path(model_dir) / "model.bin", prefix="decoder/")
        try:
            emb = w["decoder/embeddings/weight"]
            n_layers = 1 + max(
                int(k.split("/")[1][6:]) for k in w if k.startswith("decoder/layer_") and k.split("/")[1][6:].isdigit()
            )
            heads = int(w["decoder/num_heads"]) if "decoder/num_heads" in w else emb.shape[1] // 64
            pos = w["decoder/position_encodings/encodings"]
        except (KeyError, ValueError) as e:
            raise ModelError(f"{model_dir}: model.bin has no Whisper decoder ({e})") from None
        cfg = WhisperDecoderConfig(emb.shape[0], emb.shape[1], heads, n_layers, pos.shape[0])
        m = cls(cfg)
        state = {
            "embed.weight": emb,
            "norm.weight": w["decoder/layer_norm/gamma"],
            "norm.bias": w["decoder/layer_norm/beta"],
        }
        names = {"self_attention": "self_attn", "attention": "cross_attn"}
        for i in range(n_layers):
            p = f"decoder/layer_{i}/"
            for src, dst in names.items():
                lin = ["qkv", "out"] if dst == "self_attn" else ["q", "kv", "out"]
                state[f"layers.{i}.{dst}.norm.weight"] = w[p + src + "/layer_norm/gamma"]
                state[f"layers.{i}.{dst}.norm.bias"] = w[p + src + "/layer_norm/beta"]
                for j, name in enumerate(lin):
                    state[f"layers.{i}.{dst}.{name}.weight"] = w[p + f"{src}/linear_{j}/weight"]
                    state[f"layers.{i}.{dst}.{name}.bias"] = w[p + f"{src}/linear_{j}/bias"]
            state[f"layers.{i}.ffn_norm.weight"] = w[p + "ffn/layer_norm/gamma"]
            state[f"layers.{i}.ffn_norm.bias"] = w[p + "ffn/layer_norm/beta"]
            for j, name in enumerate(["fc1", "fc2"]):
                state[f"layers.{i}.{name}.weight"] = w[p + f"ffn/linear_{j}/weight"]
                state[f"layers.{i}.{name}.bias"] = w[p + f"ffn/linear_{j}/bias"]
        try:
            m.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state.items()})
        except RuntimeError as e:
            raise ModelError(f"{model_dir}: decoder weights do not fit ({str(e).splitlines()[0]})") from None
        m.positions.copy_(torch.from_numpy(pos.astype(np.float32)))
        return m.to(dtype).eval()


def missing_merges(tokenizer_json: dict) -> list[str]:
    """BPE merges a byte-level tokenizer.json lacks for its two-symbol tokens: a token with an id
    past the 256 byte symbols that no merge makes. The tokenizer.json shipped with Whisper-base
    (CTranslate2) lacks its first, "Ġ t": token 256 "Ġt" is unreachable, so " the" encodes as
    " " + "the" (220, 3322) instead of 264, and so does every word starting with t."""
    model = tokenizer_json["model"]
    vocab = model["vocab"]
    made = {"".join(m.split(" ", 1)) if isinstance(m, str) else "".join(m) for m in model["merges"]}
    specials = {t["content"] for t in tokenizer_json.get("added_tokens", [])}
    out = []
    for token, i in vocab.items():
        if i >= 256 and len(token) == 2 and token not in made and token not in specials:
            out.append(f"{token[0]} {token[1]}")
    return sorted(out, key=lambda m: vocab["".join(m.split(" "))])


class WhisperTokens:
    """Whisper's multilingual tokenizer (tokenizer.json beside model.bin) and its special ids.
    `repair`: add the merges the file lacks (`missing_merges`), at the ranks their token ids give
    them (Whisper's ids follow merge order), so text encodes as Whisper was trained on it; a
    checkpoint trained on the file as shipped keeps reading it as shipped."""

    def __init__(self, model_dir: Path, repair: bool = True):
        from tokenizers import Tokenizer

        path = Path(model_dir) / "tokenizer.json"
        raw = json.loads(path.read_text(encoding="utf-8"))
        self.lost = missing_merges(raw)
        add = self.lost if repair else []
        if add:
            vocab, merges = raw["model"]["vocab"], raw["model"]["merges"]
            for m in add:  # merge k makes token 256 + k
                merges.insert(vocab["".join(m.split(" "))] - 256, m)
        self.repaired = add
        self.tok = Tokenizer.from_str(json.dumps(raw))
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        self.suppress = [i for i in cfg.get("suppress_ids", []) if i >= 0]
        self.suppress_begin = cfg.get("suppress_ids_begin", [])
        self.eot = self.tok.token_to_id("<|endoftext|>")
        self.sot = self.tok.token_to_id("<|startoftranscript|>")
        self.transcribe = self.tok.token_to_id("<|transcribe|>")
        self.no_timestamps = self.tok.token_to_id("<|notimestamps|>")
        self.n_text = self.eot  # ids below this are text tokens

    def merged_forms(self, ids: list[int]) -> list[int]:
        """The tokens only the file's lost merges make (for "Ġ t": " the", " tiene", …) whose text,
        tokenized as the file is, uses only `ids`: what Whisper writes for words a vocabulary made
        with the file as shipped holds only in pieces (" " + "the")."""
        have = set(ids)
        return [i for i, pieces in self._lost_forms if pieces and pieces <= have]

    @cached_property
    def _lost_forms(self) -> list[tuple[int, set[int]]]:
        """Each token only the lost merges make, with the ids its text takes tokenized as the file is."""
        made = sorted(i for s, i in self.tok.get_vocab().items() for m in self.lost if s.startswith(m.replace(" ", "")))
        pieces = self.tok.encode_batch([self.tok.decode([i]) for i in made], add_special_tokens=False)
        return [(i, set(e.ids)) for i, e in zip(made, pieces)]

    def han_tokens(self) -> list[int]:
        """The text tokens made only of the UTF-8 bytes of CJK ideographs (lead bytes E4-E9,
        continuation bytes): every Chinese character Whisper can write, traditional or simplified."""
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        to_byte = {c: b for b, c in bytes_to_unicode().items()}  # byte-level BPE's stand-in for each byte
        out = []
        for s, i in self.tok.get_vocab().items():
            b = [to_byte.get(c) for c in s]
            if i < self.eot and b and None not in b and all(0x80 <= x <= 0xBF or 0xE4 <= x <= 0xE9 for x in b):
                out.append(i)
        return sorted(out)

    def devanagari_tokens(self) -> list[int]:
        """The text tokens whose bytes can only be part of Devanagari text (U+0900-U+097F: E0 A4 xx
        and E0 A5 xx), digits, spaces and the punctuation Hindi text uses (, . ? ! -, one at a
        time): Hindi's script. A token may start or end inside a character (byte-level BPE splits them); its
        whole characters must be Devanagari or allowed ASCII, a trailing lead byte E0 (then A4/A5)
        may open one, and leading continuation bytes may close one."""
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        to_byte = {c: b for b, c in bytes_to_unicode().items()}
        ascii_ok = set(b"0123456789 ,.?!-")
        out = []
        for s, i in self.tok.get_vocab().items():
            b = [to_byte.get(c) for c in s]
            if i < self.eot and b and None not in b and _devanagari_bytes(bytes(b), ascii_ok) and not _run(b):
                out.append(i)
        return sorted(out)

    def prompt(self, language: str) -> list[int]:
        lang = self.tok.token_to_id(f"<|{language}|>")
        if lang is None:
            raise ModelError(f"Whisper has no language token for {language!r}")
        return [self.sot, lang, self.transcribe, self.no_timestamps]

    def encode(self, text: str, language: str) -> list[int]:
        """Text token ids as Whisper writes them: a leading space, except in unspaced scripts."""
        return self.encode_batch([text], language)[0]

    def encode_batch(self, texts: list[str], language: str) -> list[list[int]]:
        """`encode` of many texts of one language at once (the tokenizer's batch encoder)."""
        lead = word_separator(language)
        return [e.ids for e in self.tok.encode_batch([lead + t.strip() for t in texts], add_special_tokens=False)]

    def decode(self, ids) -> str:
        """Text of token ids (specials dropped). Whisper's byte-level tokens can split a character; the
        bytes of one left incomplete (a transcript cut before the token that ends it) are dropped, not
        written as U+FFFD."""
        text = self.tok.decode([int(i) for i in ids if int(i) < self.n_text])
        return text.replace("\ufffd", "").strip()


def _run(b: list[int]) -> bool:
    """True if two punctuation marks follow each other in `b` ("??", ".-"): never Hindi's."""
    marks = set(b",.?!-")
    return any(x in marks and y in marks for x, y in zip(b, b[1:]))


def _devanagari_bytes(b: bytes, ascii_ok: set) -> bool:
    """True if `b` (a token's bytes) fits inside Devanagari-script text (see devanagari_tokens)."""
    i = 0
    while i < len(b) and 0x80 <= b[i] <= 0xBF and i < 2:  # the end of a character begun before
        i += 1
    if i == 2 and b[0] not in (0xA4, 0xA5):
        return False
    while i < len(b):
        x = b[i]
        if x < 0x80:
            if x not in ascii_ok:
                return False
            i += 1
        elif x == 0xE0:
            rest = b[i + 1 : i + 3]
            if rest and rest[0] not in (0xA4, 0xA5):
                return False
            if len(rest) == 2 and not 0x80 <= rest[1] <= 0xBF:
                return False
            i += 3  # a whole character, or the token ends inside it
        else:
            return False
    return True


@torch.no_grad()
def greedy(
    decoder: WhisperDecoder, tokens: WhisperTokens, memory: torch.Tensor, language: str, max_len: int = 224
) -> list[int]:
    """Whisper's autoregressive greedy decoding (no timestamps) of one clip: memory (1, F, D) -> ids.

    Suppresses what faster-whisper suppresses (config suppress_ids; blank and EOT at the first
    step), so that with the same weights it writes the same transcript."""
    kv = decoder.cross_kv(memory)
    seq = tokens.prompt(language)
    n0 = len(seq)
    past = [[None, None] for _ in decoder.layers]
    new = seq  # the tokens the keys/values in `past` do not cover yet
    for _ in range(max_len):
        c = len(seq) - len(new)
        mask = torch.ones(len(new), len(seq), dtype=torch.bool).tril(c)
        logits = decoder.logits(decoder(torch.tensor([new]), kv, mask, offset=c, past=past)[:, -1])[0]
        logits[tokens.suppress] = -torch.inf
        logits[tokens.n_text + 1 :] = -torch.inf  # no special tokens, no timestamps
        if len(seq) == n0:
            logits[tokens.suppress_begin + [tokens.eot, 220]] = -torch.inf
        nxt = int(logits.argmax())
        if nxt == tokens.eot:
            break
        seq, new = seq + [nxt], [nxt]
    return seq[n0:]
