"""DiffusionGemma wiring: prompt with audio slots -> encoder KV cache -> decoder logits over a canvas.

The backbone is transformers' `DiffusionGemmaForBlockDiffusion`: one weight-tied transformer run
causally over the prompt (the "encoder", which fills a KV cache) and bidirectionally over the
canvas (the "decoder", which reads the cache). Audio enters as embeddings scattered into the
`<audio>` placeholder positions of the prompt's `inputs_embeds`.

Presets build the config; this file knows nothing about sampling, files or training.
Pitfalls handled here (see docs): a tiny vision tower instead of the 167 M default, sliding
window ≥ prompt + canvas, global_head_dim = head_dim for small models, left padding with masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TINY_VISION = dict(
    model_type="gemma4_vision",
    hidden_size=8,
    intermediate_size=8,
    num_hidden_layers=1,
    num_attention_heads=1,
    num_key_value_heads=1,
    head_dim=8,
    position_embedding_size=8,
    patch_size=2,
)


def make_config(dims: dict, canvas_length: int, tokens: dict):
    """DiffusionGemmaConfig for a from-scratch backbone.

    dims: hidden, layers, heads, kv_heads, head_dim, intermediate, experts, top_k, moe_intermediate,
    sliding_window. tokens: pad, eos, bos, vocab_size.
    """
    from transformers import DiffusionGemmaConfig

    n = dims["layers"]
    text = dict(
        vocab_size=tokens["vocab_size"],
        hidden_size=dims["hidden"],
        intermediate_size=dims["intermediate"],
        num_hidden_layers=n,
        num_attention_heads=dims["heads"],
        num_key_value_heads=dims["kv_heads"],
        head_dim=dims["head_dim"],
        global_head_dim=dims["head_dim"],
        num_global_key_value_heads=dims["kv_heads"],
        sliding_window=dims["sliding_window"],
        layer_types=["sliding_attention"] * (n - 1) + ["full_attention"],
        num_experts=dims["experts"],
        top_k_experts=dims["top_k"],
        moe_intermediate_size=dims["moe_intermediate"],
        pad_token_id=tokens["pad"],
        eos_token_id=tokens["eos"],
        bos_token_id=tokens["bos"],
        max_position_embeddings=4096,
    )
    return DiffusionGemmaConfig(
        text_config=text,
        vision_config=dict(TINY_VISION),
        canvas_length=canvas_length,
        image_token_id=tokens.get("audio", 4),
    )


class Backbone(nn.Module):
    """Thin wrapper around DiffusionGemmaForBlockDiffusion with the three calls the model needs."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.text_config = tc = lm.config.text_config
        # grouped_mm needs 16-byte strides (docs pitfall): sizes divisible by 8 satisfy fp32 and bf16.
        self._grouped_ok = tc.moe_intermediate_size % 8 == 0 and tc.hidden_size % 8 == 0
        self._experts_impl = "eager"
        self.lm.set_experts_implementation("eager")
        self.softcap = lm.config.text_config.final_logit_softcapping

    # "auto": grouped_mm on CUDA, eager elsewhere. On an H200 grouped_mm ran a 26B-A4B-width layer's
    # training step 6x faster than eager; on a CPU it ran 3x slower (benchmarks/gpu_check.py).
    experts_kernel = "auto"

    def _match_experts_kernel(self, x: torch.Tensor) -> None:
        want = self.experts_kernel
        if want == "auto":
            want = "grouped_mm" if x.is_cuda and self._grouped_ok else "eager"
        if want != self._experts_impl:
            self.lm.set_experts_implementation(want)
            self._experts_impl = want

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def embed_scale(self) -> float:
        return float(self.hidden_size) ** 0.5

    def _cap(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.tanh(logits / self.softcap) * self.softcap

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Softcapped fp32 vocabulary logits (B, T, V) of final hidden states (B, T, h)."""
        return self._cap(self.lm.lm_head(hidden))

    def embed_prompt(self, prompt_ids: torch.Tensor, audio_id: int, audio: torch.Tensor, audio_valid: torch.Tensor):
        """Prompt embeddings with audio scattered in.

        prompt_ids (B, P) containing `audio_id` at n_i positions per row; audio (B, T', h) with
        audio_valid (B, T') marking the first n_i rows as real. Returns (B, P, h).
        """
        emb = self.lm.model.encoder.get_input_embeddings()(prompt_ids)
        slots = (prompt_ids == audio_id).unsqueeze(-1)
        values = audio[audio_valid].to(emb.dtype)  # row-major, matches masked_scatter's order
        if values.shape[0] != int(slots.sum()):
            raise ValueError(f"{int(slots.sum())} audio slots but {values.shape[0]} audio tokens")
        return emb.masked_scatter(slots, values)

    def prefill(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor):
        """Run the encoder over the prompt (left-padded, mask (B, P)); returns (cache, last hidden (B, P, h))."""
        from transformers import DynamicCache

        self._match_experts_kernel(inputs_embeds)  # every pass starts here, on the device it runs on
        cache = DynamicCache(config=self.text_config)
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        mask = None if bool(attention_mask.all()) else attention_mask
        out = self.lm.model.encoder(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=pos, cache=cache)
        return cache, out.last_hidden_state

    def denoise(self, cache, prompt_mask: torch.Tensor, canvas: torch.Tensor, sc_logits=None, sc_mask=None):
        """Decoder logits for a canvas: canvas (B, L) ids -> softcapped fp32 logits (B, L, V).

        The canvas attends to the whole (unpadded part of the) prompt cache and to itself. The cache
        is read, never written, so the same cache serves every denoising step.
        """
        B, L = canvas.shape
        pos = _positions_after(prompt_mask, L)
        dmask = None if bool(prompt_mask.all()) else F.pad(prompt_mask.bool(), (0, L), value=True)
        h = self.lm.model.decoder(
            decoder_input_ids=canvas,
            cache=cache,
            self_conditioning_logits=sc_logits,
            self_conditioning_mask=sc_mask,
            decoder_attention_mask=dmask,
            decoder_position_ids=pos,
        ).last_hidden_state
        return self.head(h)

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for arbitrary vectors (B, T, h) through the tied head: used by CTC."""
        return self.head(self.lm.model.decoder.norm(hidden))

    def continue_causal(self, cache, prompt_mask: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Causal encoder pass over `ids` (B, T) after the prompt in `cache` -> logits (B, T, V).

        Used by the autoregressive auxiliary loss. It appends to a fork of `cache` and leaves
        `cache` itself as it was: with gradient checkpointing, backward re-runs the decoder passes
        against `cache`, and a cache grown by these T positions would no longer match them.
        """
        import copy

        fork = copy.copy(cache)  # layers rebind keys/values on update (torch.cat), so shallow copies suffice
        fork.layers = [copy.copy(layer) for layer in cache.layers]
        cache = fork
        B, T = ids.shape
        pos = _positions_after(prompt_mask, T)
        full = torch.cat([prompt_mask.long(), torch.ones_like(ids)], dim=1)
        mask = None if bool(prompt_mask.all()) else full
        out = self.lm.model.encoder(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache)
        return self.head(out.last_hidden_state)


def _positions_after(prompt_mask: torch.Tensor, n: int) -> torch.Tensor:
    """Position ids (B, n) that continue each row's unpadded prompt (left padding takes no positions)."""
    return prompt_mask.long().sum(-1, keepdim=True) + torch.arange(n, device=prompt_mask.device)[None]
