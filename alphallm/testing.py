"""Tiny models and helpers that keep tests fast."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alphallm import model as model_lib
from alphallm.tokenizer import BOS_ID, EOS_ID, PAD_ID, CharTokenizer, Tokenizer


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


class PermutedTokenizer(Tokenizer):
  """``base`` with every id ``i`` renamed ``perm[i]``: the same text, other special ids.

  With ``permute_vocab(params, perm)`` a model reads and writes the renamed
  ids exactly as the original model does the original ones, so any code
  that takes the special ids from the tokenizer gives the same text.
  """

  def __init__(self, base: Tokenizer, perm: Sequence[int]):
    perm = np.asarray(perm, np.int64)
    if sorted(perm.tolist()) != list(range(base.vocab_size)):
      raise ValueError(f"perm must be a permutation of range({base.vocab_size})")
    self.base, self.perm, self.inverse = base, perm, np.argsort(perm)
    self.pad_id, self.bos_id, self.eos_id = (int(perm[base.pad_id]), int(perm[base.bos_id]),
                                             int(perm[base.eos_id]))

  @property
  def vocab_size(self) -> int:
    return self.base.vocab_size

  def encode(self, text: str) -> list[int]:
    return [int(self.perm[i]) for i in self.base.encode(text)]

  def decode(self, ids: Sequence[int]) -> str:
    return self.base.decode([int(self.inverse[int(i)]) for i in ids])


def adversarial_permutation(tokenizer: CharTokenizer = CharTokenizer()) -> np.ndarray:
  """A permutation of the character vocabulary that moves every special id.

  PAD goes to the last id, and ``" "``, ``"1"`` and ``"\\n"`` take ids 0, 1
  and 2, so code that assumes PAD = 0, BOS = 1 or EOS = 2 misreads real text.
  """
  v = tokenizer.vocab_size
  perm = np.arange(v)

  def send(old: int, new: int) -> None:
    j = int(np.flatnonzero(perm == new)[0])
    perm[j], perm[old] = perm[old], new

  send(PAD_ID, v - 1)
  for new, ch in enumerate(" 1\n"):
    send(tokenizer.encode(ch)[0], new)
  assert perm[PAD_ID] != PAD_ID and perm[BOS_ID] != BOS_ID and perm[EOS_ID] != EOS_ID
  return perm


def permute_vocab(params, perm: Sequence[int]):
  """Parameters whose id ``perm[i]`` plays the role id ``i`` had (embedding and LM head)."""
  inverse = jnp.asarray(np.argsort(np.asarray(perm)))
  params = dict(params)
  params["embed"] = {**params["embed"],
                     "embedding": params["embed"]["embedding"][inverse]}
  if "lm_head" in params:
    params["lm_head"] = {**params["lm_head"], "kernel": params["lm_head"]["kernel"][:, inverse]}
  return params
