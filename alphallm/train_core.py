"""What both training layouts share: the state, the SFT loss sums and the metrics.

``alphallm.train`` (data-parallel ``shard_map`` step and the host loop
``fit``) and ``alphallm.sharding`` (the FSDP step) both build on this module,
and ``train`` imports ``sharding``; neither imports the other the other way.
``train`` re-exports every name here (``train.TrainState``,
``train.loss_sums``, ...).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from alphallm import model as model_lib
from alphallm.tokenizer import PAD_ID

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
  """What a step updates and a checkpoint holds.

  ``params`` is the *trainable* tree: the model's parameters for full
  fine-tuning, the LoRA adapters (``alphallm.lora``) otherwise, whose frozen
  base is passed to the step beside the state.
  """

  step: jax.Array          # int32 scalar
  params: Any
  opt_state: Any
  rng: jax.Array           # raw uint32 key data (checkpointable)


def init_train_state(params, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(step=jnp.int32(0), params=params, opt_state=optimizer.init(params),
                    rng=jax.random.key_data(jax.random.key(seed)))


def loss_sums(params, config: model_lib.TransformerConfig, batch: dict[str, jax.Array]
              ) -> dict[str, jax.Array]:
  """Summed losses and counts of one (shard of a) batch.

  ``batch``: ``tokens [B, T]``, ``token_mask [B, T]`` (True on real tokens:
  the only thing attended to), ``loss_mask [B, T]`` (1 where the token is a
  policy target), and optionally ``value_target``/``value_mask [B, T]``, as
  ``alphallm.data`` writes them. A batch without ``token_mask`` is read as
  the character tokenizer's (``tokens != tokenizer.PAD_ID``); the PAD id of
  another tokenizer may be its EOS, which such a mask would hide.
  The policy predicts token ``t+1`` at position ``t``; the value head at
  position ``t`` predicts the value of the state ending at token ``t``.
  """
  tokens = batch["tokens"]
  if "token_mask" in batch:
    token_mask = batch["token_mask"].astype(bool)
  else:
    token_mask = tokens != PAD_ID
  out = model_lib.Transformer(config).apply({"params": params}, tokens, None, token_mask)
  logp = jax.nn.log_softmax(out.logits[:, :-1])
  target_logp = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  mask = batch["loss_mask"][:, 1:]
  sums = {"nll_sum": -(target_logp * mask).sum(), "tokens": mask.sum(),
          "correct": ((out.logits[:, :-1].argmax(-1) == tokens[:, 1:]) * mask).sum()}
  if "value_target" in batch:
    vmask = batch["value_mask"]
    sums["value_se_sum"] = (jnp.square(out.values - batch["value_target"]) * vmask).sum()
    sums["value_count"] = vmask.sum()
  return sums


def sft_metrics(sums: dict[str, jax.Array], grads: Any) -> dict[str, jax.Array]:
  """``loss``, ``token_accuracy``, ``grad_norm``, ``tokens`` (and ``value_mse``) of global sums."""
  metrics = {"loss": sums["nll_sum"] / jnp.maximum(sums["tokens"], 1.0),
             "token_accuracy": sums["correct"] / jnp.maximum(sums["tokens"], 1.0),
             "grad_norm": optax.tree.norm(grads), "tokens": sums["tokens"]}
  if "value_se_sum" in sums:
    metrics["value_mse"] = sums["value_se_sum"] / jnp.maximum(sums["value_count"], 1.0)
  return metrics
