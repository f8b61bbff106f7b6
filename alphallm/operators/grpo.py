"""GRPO (DeepSeekMath; the DeepSeek-R1 recipe): RL with a verifiable reward, no value model.

For each prompt, K completions are sampled from the old policy
``pi_old`` and scored by a verifiable reward r (e.g. 1 if the verifier
accepts the answer, else 0). Group-relative advantages (``group_advantages``)::

  A_i = (r_i - mean_j r_j) / (std_j r_j + eps)     (std with ddof 0)

A group whose rewards are all equal has std 0 and A_i = 0 exactly (the
numerator is 0): it contributes no policy gradient, only the KL term.

Per completion token t of sample i, with ``rho = pi(y_t|.) / pi_old(y_t|.)``::

  objective_t = min(rho A_i, clip(rho, 1 - eps_clip, 1 + eps_clip) A_i)
  kl_t        = pi_ref/pi - log(pi_ref/pi) - 1       (the k3 estimator)

k3 (Schulman's "Approximating KL divergence", DeepSeekMath eq. 4) is an
unbiased, always non-negative estimate of KL(pi || pi_ref) from samples of
pi; it is 0 when pi == pi_ref, and its gradient pulls log pi toward log pi_ref.
The loss (``grpo_loss``) is

  L = -mean_i [ (1/|y_i|) sum_t (objective_t - kl_coef * kl_t) ]

(DeepSeekMath's per-sequence mean, then the mean over samples); with
``token_mean`` the sum over all tokens is divided by their count instead (DAPO).

Batch (rows as ``alphallm.data.encode_examples`` writes them; see ``base``)::

  tokens, token_mask, loss_mask  [B, T]    B = prompts x K, each group's rows adjacent
  old_logp, ref_logp             [B, T-1]  per-token log-probs under pi_old, pi_ref
  advantages                     [B]       from group_advantages
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from alphallm import model as model_lib
from alphallm.operators import base


def group_advantages(rewards: Float[Array, "P K"], eps: float = 1e-6) -> Float[Array, "P K"]:
  """``(r - mean) / (std + eps)`` within each group (row) of K samples; all-equal rows give 0."""
  rewards = jnp.asarray(rewards, jnp.float32)
  centred = rewards - rewards.mean(axis=1, keepdims=True)
  return centred / (rewards.std(axis=1, keepdims=True) + eps)


def k3_kl(logp: Float[Array, "..."], ref_logp: Float[Array, "..."]) -> Float[Array, "..."]:
  """The k3 estimate of KL(pi || pi_ref) per token: ``exp(d) - d - 1``, ``d = ref - logp``."""
  d = ref_logp - logp
  return jnp.exp(d) - d - 1.0


def grpo_loss(logp: Float[Array, "B T1"], old_logp: Float[Array, "B T1"],
              ref_logp: Float[Array, "B T1"], advantages: Float[Array, "B"],
              mask: Float[Array, "B T1"], clip_eps: float = 0.2, kl_coef: float = 0.04,
              token_mean: bool = False, axis_name: str | None = None
              ) -> tuple[Float[Array, ""], dict]:
  """The GRPO loss of the module doc from per-token log-probs ``[B, T-1]``; ``(loss, metrics)``.

  ``mask`` selects the completion tokens (0/1). Rows with an empty mask
  (padding) contribute nothing. Metrics: ``loss``, ``kl`` (mean k3),
  ``clip_fraction`` (tokens whose ratio left the clip range), ``advantage``
  (mean |A|), ``tokens``.
  """
  mask = mask.astype(jnp.float32)
  ratio = jnp.exp(logp - old_logp)
  adv = advantages[:, None]
  objective = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
  kl = k3_kl(logp, ref_logp)
  per_token = -(objective - kl_coef * kl)
  if token_mean:
    loss = base.masked_mean(per_token, mask, axis_name)
  else:
    lengths = mask.sum(axis=1)
    per_seq = (per_token * mask).sum(axis=1) / jnp.maximum(lengths, 1.0)
    loss = base.masked_mean(per_seq, (lengths > 0).astype(jnp.float32), axis_name)
  clipped = (jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)
  metrics = {"loss": loss, "kl": base.masked_mean(kl, mask, axis_name),
             "clip_fraction": base.masked_mean(clipped, mask, axis_name),
             "advantage": base.masked_mean(jnp.abs(adv) * jnp.ones_like(mask), mask, axis_name),
             "tokens": base.global_sum(mask, axis_name)}
  return loss, metrics


def grpo_batch_loss(params: Any, model_cfg: model_lib.TransformerConfig, batch: dict,
                    clip_eps: float = 0.2, kl_coef: float = 0.04, token_mean: bool = False,
                    ref_params: Any = None, axis_name: str | None = None
                    ) -> tuple[Float[Array, ""], dict]:
  """``grpo_loss`` of a batch under ``params``.

  ``ref_logp`` comes from the batch when present, else from ``ref_params``
  (gradient stopped). ``old_logp`` missing means the batch was sampled by
  ``params`` itself (the first update on it): ``pi_old = stop_gradient(pi)``.
  """
  mask = batch["loss_mask"]
  logp = base.token_logprobs(params, model_cfg, batch["tokens"], batch["token_mask"], mask)
  if "ref_logp" in batch:
    ref = batch["ref_logp"]
  else:
    ref = jax.lax.stop_gradient(base.token_logprobs(
        ref_params, model_cfg, batch["tokens"], batch["token_mask"], mask))
  old = batch["old_logp"] if "old_logp" in batch else jax.lax.stop_gradient(logp)
  return grpo_loss(logp, old, ref, batch["advantages"], (mask[:, 1:] != 0), clip_eps,
                   kl_coef, token_mean, axis_name)


def make_grpo_loss(model_cfg: model_lib.TransformerConfig, clip_eps: float = 0.2,
                   kl_coef: float = 0.04, token_mean: bool = False,
                   axis_name: str | None = "data"):
  """A ``train.make_step`` loss ``(trainable, frozen = reference params, batch)``."""

  def loss_fn(trainable, frozen, batch):
    return grpo_batch_loss(trainable, model_cfg, batch, clip_eps, kl_coef, token_mean, frozen,
                           axis_name)

  return loss_fn
