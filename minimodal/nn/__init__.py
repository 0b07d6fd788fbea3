"""Layers shared by the models: attention (self / causal / cross), transformer blocks with a KV cache,
patch embedding, group normalisation."""

from minimodal.nn.attention import Attention, causal_mask, dot_product_attention
from minimodal.nn.norm import GroupNorm
from minimodal.nn.patch import PatchEmbed
from minimodal.nn.transformer import Block, Transformer

__all__ = ["Attention", "Block", "GroupNorm", "PatchEmbed", "Transformer", "causal_mask", "dot_product_attention"]
