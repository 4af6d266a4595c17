"""Attention as the construction sees it: its linear maps, and the parameter-free ops between them.

``nn.MultiheadAttention`` computes ``softmax(q k^T / sqrt(d_head)) v`` per head with
``q = x W_q + b_q`` (likewise k, v; the three weights packed in ``in_proj_weight``) and an output
projection. torch.fx cannot trace its forward (control flow on the inputs), and its packed weight
is not a layer. :func:`decompose` replaces every such module (and every ``nn.TransformerEncoder``,
whose forward inspects its input) by a module computing the same function in eval mode from plain
``nn.Linear`` layers ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` and matmul / softmax /
reshapes, so each projection gets its pair like any other Linear and the rest stays the target's
own computation. Attention masks, ``add_bias_kv``, ``add_zero_attn`` and sequence-first layouts are
refused with the reason.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .errors import UnsupportedModelError


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


class Attention(nn.Module):
    """``nn.MultiheadAttention`` (batch_first) as four Linear layers and the attention ops between them."""

    def __init__(self, mha: nn.MultiheadAttention, name: str):
        super().__init__()
        why = None
        if not mha.batch_first:
            why = ("batch_first=False: the construction keeps the batch dimension first (dim 0); build it with "
                   "batch_first=True (same weights)")
        elif mha.bias_k is not None or mha.add_zero_attn:
            why = "add_bias_kv / add_zero_attn (a learned key/value row) are not supported"
        if why:
            raise UnsupportedModelError(f"nn.MultiheadAttention {name!r}: {why}")
        d, self.heads = mha.embed_dim, mha.num_heads
        self.head_dim = d // self.heads
        b = mha.in_proj_bias
        if mha._qkv_same_embed_dim:
            w = mha.in_proj_weight
            weights = [w[:d], w[d:2 * d], w[2 * d:]]
            packed = [f"{name}.in_proj_weight"]
        else:
            weights = [mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight]
            packed = []
        biases = [None] * 3 if b is None else [b[:d], b[d:2 * d], b[2 * d:]]
        for proj, w, bias, own in zip(("q_proj", "k_proj", "v_proj"), weights, biases, ("q", "k", "v")):
            setattr(self, proj, _linear(w.detach(), None if bias is None else bias.detach()))
        self.out_proj = _linear(mha.out_proj.weight.detach(),
                                None if mha.out_proj.bias is None else mha.out_proj.bias.detach())
        bias_names = [f"{name}.in_proj_bias"] if b is not None else []
        own = {"q_proj": "q_proj_weight", "k_proj": "k_proj_weight", "v_proj": "v_proj_weight"}
        #: per projection, the target parameters it replaces (its slice of the packed ones)
        self.sources = {f"{name}.{p}": (packed or [f"{name}.{own[p]}"]) + bias_names for p in own}
        self.sources[f"{name}.out_proj"] = [f"{name}.out_proj.{p}" for p, _ in mha.out_proj.named_parameters()]

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise UnsupportedModelError("attention masks (attn_mask, key_padding_mask, is_causal) are not supported: "
                                        "the construction keeps each input's computation apart from the others")
        q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        b, t, s = q.size(0), q.size(1), k.size(1)
        q = q.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)  # (batch, heads, t, head_dim)
        k = k.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = v.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(self.head_dim))
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        out = self.out_proj(out)
        if not need_weights:
            return out, None
        return out, weights.mean(dim=1) if average_attn_weights else weights


class Encoder(nn.Module):
    """``nn.TransformerEncoder`` without masks: its layers in turn, then its final norm."""

    def __init__(self, encoder: nn.TransformerEncoder):
        super().__init__()
        self.layers = encoder.layers
        self.norm = encoder.norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        if mask is not None or src_key_padding_mask is not None or is_causal:
            raise UnsupportedModelError("nn.TransformerEncoder with a mask is not supported")
        for layer in self.layers:
            src = layer(src)
        return src if self.norm is None else self.norm(src)


def decompose(module: nn.Module) -> dict[str, list[str]]:
    """Replace, in place, every ``nn.MultiheadAttention`` by :class:`Attention` and every
    ``nn.TransformerEncoder`` by :class:`Encoder`. Returns, per new projection layer, the names of
    the target parameters it replaces (for the report's unconstructed parameters)."""
    sources: dict[str, list[str]] = {}
    for name, sub in list(module.named_modules()):
        if isinstance(sub, nn.TransformerEncoder):
            module.set_submodule(name, Encoder(sub))
    for name, sub in list(module.named_modules()):
        if isinstance(sub, nn.MultiheadAttention):
            if not name:
                raise UnsupportedModelError("the target is an nn.MultiheadAttention itself; wrap it in a module "
                                            "whose forward takes one tensor")
            att = Attention(sub, name)
            sources.update(att.sources)
            module.set_submodule(name, att)
    return sources
