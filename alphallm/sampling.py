"""Batched, jit-compiled decoding with a KV cache.

Prompts are left-padded to a common length ``P`` so that every example
writes its next token into the same cache slot; RoPE positions skip the
padding (``model.default_positions``), so a left-padded prompt produces the
same logits as the unpadded one.

Every example stops on its own once it emits one of ``stop_tokens`` (EOS,
and e.g. the step delimiter for option-level search); the loop ends when all
have stopped or ``max_new_tokens`` is reached. Shapes are static: outputs
are ``[B, max_new_tokens]`` padded with ``pad_id`` (the tokenizer's PAD) after
the stop token. Which tokens are real is said by ``lengths`` (or
``completion_mask``), never by comparing with ``pad_id``: a tokenizer's PAD may
be its EOS.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from alphallm import model as model_lib
from alphallm.tokenizer import EOS_ID, PAD_ID, Tokenizer


@flax.struct.dataclass
class SampleOutput:
  tokens: Int[Array, "B N"]          # generated ids, pad_id after the stop token
  lengths: Int[Array, "B"]           # generated tokens, stop token included
  stopped: Bool[Array, "B"]          # True if a stop token was emitted
  logprobs: Float[Array, "B N"]      # log pi(token) under the (untempered) policy
  values: Float[Array, "B N"]        # value head after each generated token
  forward_passes: Int[Array, ""]     # model calls: 1 prefill + decode steps


def sample_logits(rng: jax.Array, logits: Float[Array, "B V"], temperature: Float[Array, ""],
                  top_k: int = 0) -> Int[Array, "B"]:
  """Greedy when ``temperature == 0``, else softmax(logits / T) restricted to top-k."""
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  greedy = jnp.argmax(logits, axis=-1)
  safe_t = jnp.where(temperature > 0, temperature, 1.0)
  sampled = jax.random.categorical(rng, logits / safe_t, axis=-1)
  return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


def prefill(params, config: model_lib.TransformerConfig, prompt: Int[Array, "B P"],
            prompt_mask: Bool[Array, "B P"], cache_len: int
            ) -> tuple[model_lib.TransformerOutput, Int[Array, "B"]]:
  """Encodes left-padded prompts into a fresh cache of ``cache_len`` slots.

  Returns the model output (cache filled at slots ``[0, P)``) and each
  example's next RoPE position (its prompt length).
  """
  b, p = prompt.shape
  cache = model_lib.KVCache.init(config, b, cache_len)
  positions = model_lib.default_positions(prompt_mask)
  out = model_lib.Transformer(config).apply(
      {"params": params}, prompt, positions, prompt_mask, cache, jnp.zeros((b,), jnp.int32))
  return out, prompt_mask.sum(axis=1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "top_k", "pad_id"))
def generate(params, config: model_lib.TransformerConfig, prompt: Int[Array, "B P"],
             prompt_mask: Bool[Array, "B P"], rng: jax.Array, *, max_new_tokens: int,
             temperature: float | Array = 0.0, top_k: int = 0,
             stop_tokens: Int[Array, "M"] | None = None, pad_id: int = PAD_ID) -> SampleOutput:
  """Samples continuations of a batch of left-padded prompts.

  Args:
    params: model parameters.
    config: the model's config (static).
    prompt: ``[B, P]`` left-padded prompt ids (any id on the left: only
      ``prompt_mask`` says which are real).
    prompt_mask: ``[B, P]`` True on real prompt tokens.
    rng: PRNG key.
    max_new_tokens: static cap N on generated tokens.
    temperature: 0 for greedy decoding.
    top_k: if > 0, sample among the k most likely tokens (static).
    stop_tokens: ``[M]`` ids that end an example (its last generated token).
    pad_id: the id written after an example's stop token (static; the
      tokenizer's ``pad_id``). It is never attended to.

  Returns:
    ``SampleOutput`` with ``[B, N]`` tokens.
  """
  b, p = prompt.shape
  n = max_new_tokens
  if stop_tokens is None:
    stop_tokens = jnp.zeros((0,), jnp.int32)
  temperature = jnp.asarray(temperature, jnp.float32)
  model = model_lib.Transformer(config)
  out, next_pos = prefill(params, config, prompt, prompt_mask, p + n)

  def is_stop(tok):
    return jnp.any(tok[:, None] == stop_tokens[None, :], axis=-1)

  def body(state):
    i, rng, cache, logits, tokens, logprobs, values, done, lengths = state
    rng, step_rng = jax.random.split(rng)
    tok = sample_logits(step_rng, logits, temperature, top_k)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), tok[:, None], axis=-1)[:, 0]
    tok = jnp.where(done, pad_id, tok)
    step = model.apply({"params": params}, tok[:, None], (next_pos + i)[:, None],
                       ~done[:, None], cache, jnp.full((b,), p + i, jnp.int32))
    tokens = tokens.at[:, i].set(tok)
    logprobs = logprobs.at[:, i].set(jnp.where(done, 0.0, logp))
    values = values.at[:, i].set(jnp.where(done, 0.0, step.values[:, 0]))
    lengths = lengths + (~done).astype(jnp.int32)
    done = done | is_stop(tok)
    return (i + 1, rng, step.cache, step.logits[:, -1], tokens, logprobs, values, done,
            lengths)

  def cond(state):
    i, done = state[0], state[7]
    return (i < n) & ~jnp.all(done)

  init = (jnp.int32(0), rng, out.cache, out.logits[:, -1],
          jnp.full((b, n), pad_id, jnp.int32), jnp.zeros((b, n), jnp.float32),
          jnp.zeros((b, n), jnp.float32), jnp.zeros((b,), bool), jnp.zeros((b,), jnp.int32))
  i, _, _, _, tokens, logprobs, values, done, lengths = jax.lax.while_loop(cond, body, init)
  return SampleOutput(tokens=tokens, lengths=lengths, stopped=done, logprobs=logprobs,
                      values=values, forward_passes=i + 1)


def encode_prompts(tokenizer: Tokenizer, prompts: Sequence[str], length: int | None = None,
                   add_bos: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads encoded prompts to ``length`` (default: the longest).

  Returns ``(ids [B, P] int32, mask [B, P] bool)``. A prompt longer than
  ``length`` is an error that names it.
  """
  encoded = [([tokenizer.bos_id] if add_bos else []) + tokenizer.encode(s) for s in prompts]
  if not encoded:
    raise ValueError("encode_prompts: no prompts given")
  longest = max(len(e) for e in encoded)
  length = longest if length is None else length
  ids = np.full((len(encoded), length), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(encoded), length), bool)
  for row, e in enumerate(encoded):
    if len(e) > length:
      raise ValueError(
          f"prompt {row} has {len(e)} tokens, more than the {length} allowed: "
          f"{prompts[row][:80]!r}")
    ids[row, length - len(e):] = e
    mask[row, length - len(e):] = True
  return ids, mask


def completion_mask(tokens: Int[Array, "... N"], pad_id: int = PAD_ID, eos_id: int = EOS_ID
                    ) -> Bool[Array, "... N"]:
  """True on the real tokens of generated rows (``pad_id`` after the stop token).

  A token is real when no EOS comes before it and it is not PAD, except the
  first EOS itself, which is real even when ``pad_id == eos_id`` (a tokenizer
  without a PAD token pads with EOS). Rows are read as ``generate`` and the
  searches write them: nothing but PAD follows an EOS. Prefer the lengths
  (``SampleOutput.lengths``) where they are at hand.
  """
  is_eos = tokens == eos_id
  eos_before = (jnp.cumsum(is_eos.astype(jnp.int32), axis=-1) - is_eos) > 0
  return ~eos_before & ((tokens != pad_id) | is_eos)


def decode_completions(tokenizer: Tokenizer, tokens: np.ndarray) -> list[str]:
  """Generated ids ``[B, N]`` to text, each cut at its first EOS."""
  return [tokenizer.decode(row) for row in np.asarray(tokens)]
