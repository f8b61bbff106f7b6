"""SFT of the policy (and optionally the value head) with a data-parallel step.

The step follows the pmap programming model: a per-device function sees its
shard of the global batch, computes gradients, and averages them with
``lax.pmean`` over the named ``data`` axis. It is written with
``jax.shard_map`` (the current form of ``jax.pmap``) over a 1-D mesh of all
local devices, then jit-compiled: parameters and optimizer state are
replicated, the batch is split along its first axis.

The per-device loss is normalised by the *global* number of target tokens
(obtained with ``psum``), times the number of devices, so that the pmean of
per-device gradients equals the gradient of the global-batch mean exactly,
whatever the padding on each device (tested on 8 simulated CPU devices).

The step is generic (``make_step``): it trains a *trainable* tree (the state's
``params``) beside an optional *frozen* one, for any loss ``(trainable,
frozen, batch) -> (loss, sums)``. Full SFT (``make_train_step``) trains the
model's parameters with no frozen tree; LoRA SFT (``make_lora_train_step``)
trains ``alphallm.lora`` adapters on a frozen base, so gradients and AdamW
moments exist for the adapters only. A DPO or GRPO step is another loss over
the same two trees (the policy's adapters or parameters, the frozen reference).

Layering: ``train_core`` (state, loss sums, metrics) <- ``sharding`` (FSDP
layouts and step) <- ``train`` (data-parallel steps and the host loop
``fit``); no module imports one above it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alphallm import checkpoint
from alphallm import data
from alphallm import lora as lora_lib
from alphallm import model as model_lib
from alphallm import sharding
from alphallm.train_core import (DATA_AXIS, TrainState, init_train_state, loss_sums,
                                 sft_metrics)

__all__ = ["DATA_AXIS", "TrainState", "init_train_state", "loss_sums", "sft_metrics",
           "make_optimizer", "make_step", "sft_loss", "make_train_step",
           "make_lora_train_step", "data_mesh", "shard_batch", "replicate", "fit",
           "NonFiniteLossError", "check_finite", "is_fsdp_mesh"]

# loss_fn(trainable, frozen, batch) -> (loss, sums): see ``make_step``.
LossFn = Callable[[Any, Any, dict], tuple[jax.Array, dict]]


def make_optimizer(learning_rate: float, total_steps: int, warmup_steps: int = 0,
                   end_learning_rate: float | None = None, weight_decay: float = 0.0,
                   grad_clip: float = 1.0, b1: float = 0.9, b2: float = 0.95
                   ) -> optax.GradientTransformation:
  """AdamW with linear warm-up then cosine decay, after global-norm clipping."""
  if total_steps <= 0:
    raise ValueError(f"total_steps must be > 0, got {total_steps}")
  warmup_steps = min(warmup_steps, total_steps - 1)
  end = learning_rate * 0.1 if end_learning_rate is None else end_learning_rate
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup_steps else learning_rate, peak_value=learning_rate,
      warmup_steps=warmup_steps, decay_steps=total_steps, end_value=end)
  return optax.chain(
      optax.clip_by_global_norm(grad_clip),
      optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay))


# ---------------------------------------------------------------------------
# The generic data-parallel step over a trainable and a frozen tree.


def _per_device_step(state: TrainState, frozen, batch, *, loss_fn: LossFn, optimizer,
                     num_devices: int, metrics_fn):
  """One step on this device's shard; gradients (of ``state.params`` only) are pmean-ed."""

  def scaled(trainable):
    loss, sums = loss_fn(trainable, frozen, batch)
    # pmean divides by the device count; scale so the result is the global mean.
    return loss * num_devices, sums

  grads, sums = jax.grad(scaled, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, DATA_AXIS)
  sums = jax.lax.psum(sums, DATA_AXIS)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics_fn(sums, grads)


def make_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, mesh: Mesh, *,
              metrics_fn=sft_metrics, with_frozen: bool = True):
  """A jit-compiled data-parallel step for any loss over a trainable and a frozen tree.

  Args:
    loss_fn: ``(trainable, frozen, batch) -> (loss, sums)``, run on each
      device's shard inside ``shard_map``; ``loss`` must already be
      normalised by *global* counts (``lax.psum`` over ``DATA_AXIS``) so the
      pmean of the gradients is the global-batch gradient; ``sums`` is a dict
      of per-shard totals (psum-ed for the metrics). ``frozen`` is ``None``
      when ``with_frozen`` is False.
    optimizer: updates ``state.params`` (the trainable tree) only.
    mesh: a 1-D ``data`` mesh (``data_mesh``).
    metrics_fn: ``(global sums, grads) -> metrics`` (default ``sft_metrics``).
    with_frozen: whether the step takes a frozen tree (e.g. a LoRA base, a
      DPO reference model), replicated and never donated.

  Returns:
    ``step(state, frozen, batch)`` (or ``step(state, batch)``) ``-> (state,
    metrics)``; ``state`` is donated, ``batch`` split along its leading axis.
  """
  num_devices = mesh.shape[DATA_AXIS]
  per_device = functools.partial(_per_device_step, loss_fn=loss_fn, optimizer=optimizer,
                                 num_devices=num_devices, metrics_fn=metrics_fn)
  replicated = NamedSharding(mesh, P())
  if with_frozen:
    step = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS)),
                         out_specs=(P(), P()), check_vma=False)
  else:
    step = jax.shard_map(lambda state, batch: per_device(state, None, batch), mesh=mesh,
                         in_specs=(P(), P(DATA_AXIS)), out_specs=(P(), P()),
                         check_vma=False)
  return jax.jit(step, donate_argnums=(0,), out_shardings=(replicated, replicated))


def sft_loss(config: model_lib.TransformerConfig, value_coef: float = 0.0,
             policy_coef: float = 1.0, to_params=None) -> LossFn:
  """The SFT loss ``policy_coef * NLL + value_coef * value MSE`` as a ``make_step`` loss.

  ``to_params(trainable, frozen) -> params`` builds the model's parameters
  (default: the trainable tree itself; LoRA: ``lora.merge(frozen, trainable)``).
  Both terms are normalised by their global counts.
  """

  def loss_fn(trainable, frozen, batch):
    params = trainable if to_params is None else to_params(trainable, frozen)
    sums = loss_sums(params, config, batch)
    global_tokens = jnp.maximum(jax.lax.psum(sums["tokens"], DATA_AXIS), 1.0)
    loss = policy_coef * sums["nll_sum"] / global_tokens
    if "value_se_sum" in sums and value_coef:
      global_values = jnp.maximum(jax.lax.psum(sums["value_count"], DATA_AXIS), 1.0)
      loss = loss + value_coef * sums["value_se_sum"] / global_values
    return loss, sums

  return loss_fn


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis ``data`` over all local devices (or ``devices``)."""
  devices = jax.local_devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def make_train_step(config: model_lib.TransformerConfig, optimizer: optax.GradientTransformation,
                    mesh: Mesh, value_coef: float = 0.0, policy_coef: float = 1.0):
  """The jit-compiled data-parallel SFT step ``(state, batch) -> (state, metrics)``.

  The loss is ``policy_coef * NLL + value_coef * value MSE``: SFT of the policy
  is ``(1, 0)``, training a critic's value head alone is ``(0, 1)``. The global
  batch's leading axis must be divisible by the mesh size.
  """
  return make_step(sft_loss(config, value_coef, policy_coef), optimizer, mesh,
                   with_frozen=False)


def make_lora_train_step(config: model_lib.TransformerConfig, lora: lora_lib.LoraConfig,
                         optimizer: optax.GradientTransformation, mesh: Mesh,
                         value_coef: float = 0.0, policy_coef: float = 1.0):
  """The LoRA SFT step ``(state, frozen, batch) -> (state, metrics)``.

  ``state.params`` are the adapters (``lora.init_adapters``), the only tree
  with gradients and optimizer state; ``frozen`` is the base as
  ``lora.freeze_base`` stores it (replicated with ``replicate``). The loss is
  ``make_train_step``'s on ``lora.merge(frozen, adapters)``.
  """
  merge = lambda adapters, frozen: lora_lib.merge(frozen, adapters, lora)  # noqa: E731
  return make_step(sft_loss(config, value_coef, policy_coef, to_params=merge), optimizer,
                   mesh)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Places a host batch on the mesh, split along the leading axis."""
  n = mesh.shape[DATA_AXIS]
  for key, value in batch.items():
    if value.shape[0] % n:
      raise ValueError(
          f"batch[{key!r}] has leading size {value.shape[0]}, not divisible by the "
          f"{n} devices of the data axis")
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return {k: jax.device_put(v, sharding) for k, v in batch.items()}


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, NamedSharding(mesh, P()))


class NonFiniteLossError(FloatingPointError):
  """A loss or gradient became NaN/Inf."""


def check_finite(metrics: dict[str, Any], step: int) -> None:
  """Raises ``NonFiniteLossError`` naming the step if loss or grad norm is not finite."""
  for key in ("loss", "grad_norm"):
    value = float(metrics[key])
    if not np.isfinite(value):
      raise NonFiniteLossError(f"{key} is {value} at training step {step}; "
                               "stopping before the state is checkpointed")


# ---------------------------------------------------------------------------
# The host loop shared by SFT of the policy and regression of the critics.


def is_fsdp_mesh(mesh: Mesh) -> bool:
  """Whether ``mesh`` is an ``alphallm.sharding`` ``("data", "fsdp")`` mesh."""
  return "fsdp" in mesh.axis_names


@functools.lru_cache(maxsize=16)
def _compiled(config: model_lib.TransformerConfig, hparams: tuple, mesh: Mesh,
              value_coef: float, policy_coef: float, min_size: int,
              lora: lora_lib.LoraConfig | None = None):
  """``(optimizer, jitted step)``, shared by every run with equal settings.

  The data-parallel step on a 1-D ``data`` mesh (the LoRA step with
  ``lora``), the FSDP step (``sharding.make_fsdp_train_step``) on a
  ``("data", "fsdp")`` mesh.
  """
  lr, steps, warmup, weight_decay, grad_clip, end_lr = hparams
  optimizer = make_optimizer(lr, steps, warmup, end_learning_rate=end_lr,
                             weight_decay=weight_decay, grad_clip=grad_clip)
  if lora is not None:
    return optimizer, make_lora_train_step(config, lora, optimizer, mesh,
                                           value_coef=value_coef, policy_coef=policy_coef)
  if is_fsdp_mesh(mesh):
    return optimizer, sharding.make_fsdp_train_step(
        config, optimizer, mesh, value_coef=value_coef, policy_coef=policy_coef,
        min_size=min_size)
  return optimizer, make_train_step(config, optimizer, mesh, value_coef=value_coef,
                                    policy_coef=policy_coef)


def _hparams(cfg: Any) -> tuple:
  get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
  end_lr = get("end_learning_rate", None)
  return (float(cfg.learning_rate), int(cfg.steps), int(cfg.warmup_steps),
          float(cfg.weight_decay), float(cfg.grad_clip),
          None if end_lr is None or end_lr < 0 else float(end_lr))


def fit(cfg: Any, config: model_lib.TransformerConfig, dataset: dict[str, np.ndarray],
        init_params, mesh: Mesh, *, seed: int, ckpt_dir: str | None, value_coef: float = 0.0,
        policy_coef: float = 1.0, desc: str = "train", writer=None,
        min_size: int | None = None, lora: lora_lib.LoraConfig | None = None
        ) -> tuple[Any, list[dict[str, float]]]:
  """Trains for ``cfg.steps`` steps, resumable from ``ckpt_dir``.

  ``cfg`` has ``steps, batch_size, learning_rate, warmup_steps, weight_decay,
  grad_clip, checkpoint_every`` and optionally ``max_to_keep, log_every,
  end_learning_rate`` (an SFT ConfigDict or ``critics.CriticTrainConfig``).
  The batch of step ``s`` is ``data.batch_at(dataset, batch_size, s, seed)``,
  so a resumed run reads exactly the batches an uninterrupted one would.
  Losses are checked for NaN/Inf before every save, so the newest checkpoint
  is always a good one. ``init_params`` are copied, never donated.

  The layout follows ``mesh``: on a 1-D ``data`` mesh (``data_mesh``) the
  state is replicated and the step data-parallel; on a ``("data", "fsdp")``
  mesh (``sharding.make_mesh``) parameters and optimizer state are sharded by
  the FSDP rule with threshold ``min_size`` (default
  ``sharding.DEFAULT_MIN_SIZE``), the step is ``sharding.make_fsdp_train_step``
  and the returned parameters stay sharded. Checkpoints restore into the
  same layout.

  LoRA (``lora`` given, data mesh only): ``init_params`` become the frozen
  base (``lora.freeze_base``), adapters are initialised from ``seed``
  (``lora.init_adapters``) and are all the state trains and checkpoints
  hold; the returned parameters are ``lora.export_merged`` (the base's dtype).

  Returns:
    The final parameters and the metrics of the steps logged in this call.
  """
  get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
  fsdp = is_fsdp_mesh(mesh)
  if lora is not None and fsdp:
    raise ValueError("train.fit: LoRA runs on a 1-D data mesh (train.data_mesh); the FSDP "
                     "step has no LoRA mode yet")
  if fsdp:
    min_size = sharding.DEFAULT_MIN_SIZE if min_size is None else int(min_size)
    place_batch = sharding.shard_batch
  else:
    min_size, place_batch = 0, shard_batch
  optimizer, step_fn = _compiled(config, _hparams(cfg), mesh, float(value_coef),
                                 float(policy_coef), min_size, lora)
  frozen = None
  if lora is not None:
    frozen = replicate(lora_lib.freeze_base(init_params, lora), mesh)
    adapters = lora_lib.init_adapters(init_params, lora, jax.random.fold_in(
        jax.random.key(seed), 1))
    state = init_train_state(adapters, optimizer, seed)
    run = lambda state, batch: step_fn(state, frozen, batch)  # noqa: E731
  elif fsdp:  # the moments are created sharded, never whole
    state = sharding.init_train_state(jax.tree.map(jnp.array, init_params), optimizer, seed,
                                      mesh, min_size)
    run = step_fn
  else:
    state = init_train_state(jax.tree.map(jnp.array, init_params), optimizer, seed)
    run = step_fn
  ckpt = None
  if ckpt_dir is not None:
    ckpt = checkpoint.Checkpointer(ckpt_dir, max_to_keep=get("max_to_keep", 2))
    restored = ckpt.restore_latest(state)
    if restored is not None:
      state = restored[1]
  history: list[dict[str, float]] = []
  start, steps = int(state.step), int(cfg.steps)
  every, log_every = int(cfg.checkpoint_every), int(get("log_every", 50) or 50)
  if start < steps:
    if not fsdp:
      state = replicate(state, mesh)
    pending = []  # device-side metrics, fetched in bulk to keep the host out of the loop
    bar = tqdm.tqdm(range(start, steps), desc=desc, initial=start, total=steps, disable=None)
    for step in bar:
      batch = place_batch(data.batch_at(dataset, int(cfg.batch_size), step, seed), mesh)
      state, metrics = run(state, batch)
      pending.append((step + 1, metrics))
      last = step + 1 == steps
      if (step + 1) % log_every == 0 or (step + 1) % every == 0 or last:
        for s, m in jax.device_get(pending):
          history.append({"step": s, **{k: float(v) for k, v in m.items()}})
          check_finite(history[-1], s - 1)
        pending = []
        record = history[-1]
        bar.set_postfix({k: f"{record[k]:.3f}" for k in ("loss", "value_mse") if k in record})
        if writer is not None:
          writer.write(desc, step + 1, {k: v for k, v in record.items() if k != "step"})
      if ckpt is not None and ((step + 1) % every == 0 or last):
        if writer is not None:
          writer.flush()  # metrics first: a crash after the save must not lose them
        ckpt.save(step + 1, state, {"phase": desc})
  if ckpt is not None:
    ckpt.close()
  if lora is not None:
    return lora_lib.export_merged(frozen, state.params, lora), history
  return state.params, history
