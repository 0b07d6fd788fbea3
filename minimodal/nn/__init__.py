"""Layers shared by the models: attention (self / causal / cross), transformer blocks with a KV cache,
patch embedding."""

from minimodal.nn.attention import Attention, causal_mask, dot_product_attention
from minimodal.nn.patch import PatchEmbed
from minimodal.nn.transformer import Block, Transformer

__all__ = ["Attention", "Block", "PatchEmbed", "Transformer", "causal_mask", "dot_product_attention"]
