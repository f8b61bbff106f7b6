"""Tiny models and helpers that keep tests fast."""

from __future__ import annotations

import jax

from alphallm import model as model_lib
from alphallm.tokenizer import CharTokenizer


def tiny_config(vocab_size: int | None = None, **overrides) -> model_lib.TransformerConfig:
  """A 2-layer GQA transformer of a few thousand parameters."""
  kw = dict(vocab_size=vocab_size or CharTokenizer().vocab_size, num_layers=2, embed_dim=32,
            num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64, max_len=64)
  kw.update(overrides)
  return model_lib.TransformerConfig(**kw)


def random_params(config: model_lib.TransformerConfig, seed: int = 0, scale: float = 0.02):
  """Random parameters with a non-zero value head (init leaves it at zero)."""
  params = model_lib.init_params(config, jax.random.key(seed))
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  leaves = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, leaves)
