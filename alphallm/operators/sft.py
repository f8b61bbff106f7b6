"""Filtered SFT (the paper's improvement step) as a pure objective of token log-probs.

The loop's SFT (``alphallm.improve.run_sft`` over ``train.sft_loss``) trains
on the kept trajectories; this is the same loss written on log-probs, shared
by the operators whose data are weighted SFT rows (``distill``, ``rft``):

  L = -sum_{b,t} w_{b,t} log pi(y_{b,t} | y_{b,<t}) / sum_{b,t} w_{b,t}

with ``w = loss_mask[:, 1:]`` (1 on completion tokens, or a per-row weight).
"""

from __future__ import annotations

from typing import Any

from jaxtyping import Array, Float

from alphallm import model as model_lib
from alphallm.operators import base


def sft_loss(token_logp: Float[Array, "B T1"], weights: Float[Array, "B T1"],
             axis_name: str | None = None) -> tuple[Float[Array, ""], dict]:
  """Token-weighted NLL of the module doc; ``(loss, {"loss", "tokens"})``."""
  loss = base.masked_mean(-token_logp, weights, axis_name)
  return loss, {"loss": loss, "tokens": base.global_sum(weights, axis_name)}


def sft_batch_loss(params: Any, model_cfg: model_lib.TransformerConfig, batch: dict,
                   axis_name: str | None = None) -> tuple[Float[Array, ""], dict]:
  """``sft_loss`` of an ``encode_examples`` batch under ``params`` (equals ``train.loss_sums``'
  ``nll_sum / tokens``)."""
  logp = base.token_logprobs(params, model_cfg, batch["tokens"], batch["token_mask"],
                             batch["loss_mask"])
  return sft_loss(logp, batch["loss_mask"][:, 1:], axis_name)
