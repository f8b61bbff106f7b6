"""Decoding methods under one interface and one compute accounting.

Every method, from greedy decoding to eta-MCTS, is built by a ``make_*``
function into a jit-compiled

    decode(params, prompt [B, P], prompt_mask [B, P], rng) -> DecodeResult

that sees only the prompts: no method can reach the answer key.

Compute is counted per problem so that methods can be compared at equal
cost (the paper's Table 7):

* ``forward_passes``: model evaluations of one token position for this
  problem (a prefill of the prompt counts 1; each decode step of each
  sequence counts 1; scoring or re-encoding T tokens counts T);
* ``tokens``: tokens generated for this problem (all samples, all nodes);
* ``rollouts``: complete or partial solutions sampled (tree nodes for search).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from alphallm import model as model_lib
from alphallm import sampling


@flax.struct.dataclass
class DecodeResult:
  completions: Int[Array, "B C"]     # chosen completion ids, PAD-padded (may end with EOS)
  forward_passes: Float[Array, "B"]  # per-problem model evaluations (see module doc)
  tokens: Float[Array, "B"]          # per-problem generated tokens
  rollouts: Float[Array, "B"]        # per-problem sampled solutions / expanded nodes


DecodeFn = Callable[[object, jax.Array, jax.Array, jax.Array], DecodeResult]


def sample_accounting(out: sampling.SampleOutput) -> tuple[jax.Array, jax.Array]:
  """(forward_passes, tokens) per row of one ``sampling.generate`` call.

  A row pays for the prompt prefill (1) and one pass per token it generated.
  """
  tokens = out.lengths.astype(jnp.float32)
  return tokens + 1.0, tokens


def make_sampler(config: model_lib.TransformerConfig, max_new_tokens: int, eos_id: int,
                 temperature: float = 0.0, top_k: int = 0) -> DecodeFn:
  """Greedy (``temperature == 0``) or temperature/top-k sampling of one solution."""

  @jax.jit
  def decode(params, prompt, prompt_mask, rng) -> DecodeResult:
    out = sampling.generate(params, config, prompt, prompt_mask, rng,
                            max_new_tokens=max_new_tokens, temperature=temperature,
                            top_k=top_k, stop_tokens=jnp.array([eos_id], jnp.int32))
    fwd, toks = sample_accounting(out)
    return DecodeResult(completions=out.tokens, forward_passes=fwd, tokens=toks,
                        rollouts=jnp.ones_like(fwd))

  return decode


def repeat_prompts(prompt: jax.Array, prompt_mask: jax.Array, n: int
                   ) -> tuple[jax.Array, jax.Array]:
  """``[B, P] -> [B * n, P]``, each problem's copies adjacent."""
  return jnp.repeat(prompt, n, axis=0), jnp.repeat(prompt_mask, n, axis=0)


@functools.partial(jax.jit, static_argnames=("config",))
def score_completions(params, config: model_lib.TransformerConfig, prompt: jax.Array,
                      prompt_mask: jax.Array, completions: jax.Array
                      ) -> tuple[Float[Array, "B"], Float[Array, "B"]]:
  """Value-head score of each completion and its total log-probability.

  Re-encodes ``prompt ++ completion`` (``[B, P + C]``) in one pass. The score
  is the value head at the completion's last real token.
  """
  seq = jnp.concatenate([prompt, completions], axis=1)
  mask = jnp.concatenate([prompt_mask, completions != 0], axis=1)
  out = model_lib.Transformer(config).apply(
      {"params": params}, seq, model_lib.default_positions(mask), mask)
  p = prompt.shape[1]
  last = p - 1 + (completions != 0).sum(axis=1)
  value = jnp.take_along_axis(out.values, last[:, None], axis=1)[:, 0]
  logp = jax.nn.log_softmax(out.logits[:, p - 1:-1])
  tok_logp = jnp.take_along_axis(logp, completions[..., None], axis=-1)[..., 0]
  return value, (tok_logp * (completions != 0)).sum(axis=1)
