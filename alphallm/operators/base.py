"""What every policy-improvement operator shares: log-probs of a batch, masked means, the registry.

Batch layout (``alphallm.data.encode_examples``'s rows, right-padded)::

  tokens      [B, T] int32   BOS + prompt + completion (+ EOS), PAD after
  token_mask  [B, T] bool    True on real tokens (what the model attends to)
  loss_mask   [B, T] float   1 (or a weight) where the token is a policy target

The policy predicts token ``t+1`` at position ``t``, so per-token log-probs
are ``[B, T-1]``: entry ``t`` is ``log pi(tokens[t+1] | tokens[:t+1])``,
masked by ``loss_mask[:, 1:]`` (zero where the mask is zero). Summing them
gives ``log pi(completion | prompt)`` (``sequence_logprobs``), the quantity
DPO, RFT, distillation and GRPO are written in.

Each operator module writes its loss as a pure function of log-probs (testable
against hand-computed values, no model needed) plus a wrapper taking
``(params, model_cfg, batch)``; all are jit-able and return ``(loss, metrics)``.
Normalisers may be summed over a named mesh axis (``axis_name``) so a
data-parallel step (``alphallm.train.make_step``) sees the global-batch mean.

Axis letters: B rows, T sequence positions, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from alphallm import model as model_lib


def token_logprobs_from_logits(logits: Float[Array, "B T V"], tokens: Int[Array, "B T"],
                               loss_mask: Float[Array, "B T"]) -> Float[Array, "B T1"]:
  """``[B, T-1]`` log-prob of each next token, times ``loss_mask[:, 1:] != 0`` (T1 = T - 1).

  The mask only selects (0/1); a weighted mask's weights are applied by the loss.
  """
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  target = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  return jnp.where(loss_mask[:, 1:] != 0, target, 0.0)


def token_logprobs(params: Any, model_cfg: model_lib.TransformerConfig,
                   tokens: Int[Array, "B T"], token_mask: Bool[Array, "B T"],
                   loss_mask: Float[Array, "B T"]) -> Float[Array, "B T1"]:
  """Per-token log-probs ``[B, T-1]`` of the completion tokens under ``params``.

  Positions come from ``token_mask`` (``model.default_positions``), so left
  padding is skipped as the search's rows need; right-padded rows get 0..n-1.
  """
  mask = token_mask.astype(bool)
  out = model_lib.Transformer(model_cfg).apply(
      {"params": params}, tokens, model_lib.default_positions(mask), mask)
  return token_logprobs_from_logits(out.logits, tokens, loss_mask)


def sequence_logprobs(params: Any, model_cfg: model_lib.TransformerConfig,
                      tokens: Int[Array, "B T"], token_mask: Bool[Array, "B T"],
                      loss_mask: Float[Array, "B T"]) -> Float[Array, "B"]:
  """``[B]`` ``log pi(completion | prompt)``: the per-token log-probs summed over the mask."""
  return token_logprobs(params, model_cfg, tokens, token_mask, loss_mask).sum(axis=1)


def global_sum(x: Float[Array, "..."], axis_name: str | None = None) -> Float[Array, ""]:
  """``sum(x)``, also summed over the mesh axis ``axis_name`` when given (inside shard_map)."""
  total = jnp.sum(x)
  return total if axis_name is None else jax.lax.psum(total, axis_name)


def masked_mean(x: Float[Array, "..."], mask: Float[Array, "..."],
                axis_name: str | None = None) -> Float[Array, ""]:
  """``sum(x * mask) / max(sum(mask), 1)``; the denominator is global with ``axis_name``.

  With ``axis_name`` the result is this shard's share of the global mean: the
  psum of the shards' values is the global mean (what ``train.make_step``
  expects of a loss).
  """
  return jnp.sum(x * mask) / jnp.maximum(global_sum(mask, axis_name), 1e-9)


# ---------------------------------------------------------------------------
# The registry: one operator per module, chosen by name from a config.


@dataclasses.dataclass(frozen=True)
class Operator:
  """A policy-improvement operator: its name, a one-line doc and the module holding it.

  ``alphallm.operators.module_of(name)`` returns the module itself (the
  registry here imports none of them, so they can all import ``base``).
  """

  name: str
  doc: str
  module: str


OPERATORS: dict[str, Operator] = {op.name: op for op in (
    Operator("sft", "filtered SFT on the best kept trajectory (the paper; alphallm.improve)",
             "alphallm.operators.sft"),
    Operator("distill", "cross-entropy to the search's improved policy at every expanded node",
             "alphallm.operators.distill"),
    Operator("dpo", "step-level DPO on sibling options with a value gap, reference = last "
             "round's policy", "alphallm.operators.dpo"),
    Operator("rft", "rejection sampling (STaR/RFT): N samples per prompt, SFT on the verified",
             "alphallm.operators.rft"),
    Operator("grpo", "GRPO: group-relative advantages of a verifiable reward, clipped ratio, "
             "k3 KL to the reference", "alphallm.operators.grpo"),
)}


def get_operator(name: str) -> Operator:
  """The registered operator ``name``; an unknown name is an error listing the known ones."""
  if name not in OPERATORS:
    raise ValueError(f"unknown policy-improvement operator {name!r}; known: {sorted(OPERATORS)}")
  return OPERATORS[name]
