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
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alphallm import model as model_lib
from alphallm.tokenizer import PAD_ID

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar
  params: Any
  opt_state: Any
  rng: jax.Array           # raw uint32 key data (checkpointable)


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


def _per_device_step(state: TrainState, batch, *, config, optimizer, value_coef: float,
                     policy_coef: float, num_devices: int):
  """One SFT step on this device's shard; gradients are pmean-ed over ``data``."""

  def loss_fn(params):
    sums = loss_sums(params, config, batch)
    global_tokens = jnp.maximum(jax.lax.psum(sums["tokens"], DATA_AXIS), 1.0)
    loss = policy_coef * sums["nll_sum"] / global_tokens
    if "value_se_sum" in sums and value_coef:
      global_values = jnp.maximum(jax.lax.psum(sums["value_count"], DATA_AXIS), 1.0)
      loss = loss + value_coef * sums["value_se_sum"] / global_values
    # pmean divides by the device count; scale so the result is the global mean.
    return loss * num_devices, sums

  grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, DATA_AXIS)
  sums = jax.lax.psum(sums, DATA_AXIS)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": sums["nll_sum"] / jnp.maximum(sums["tokens"], 1.0),
             "token_accuracy": sums["correct"] / jnp.maximum(sums["tokens"], 1.0),
             "grad_norm": optax.tree.norm(grads), "tokens": sums["tokens"]}
  if "value_se_sum" in sums:
    metrics["value_mse"] = sums["value_se_sum"] / jnp.maximum(sums["value_count"], 1.0)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis ``data`` over all local devices (or ``devices``)."""
  devices = jax.local_devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def make_train_step(config: model_lib.TransformerConfig, optimizer: optax.GradientTransformation,
                    mesh: Mesh, value_coef: float = 0.0, policy_coef: float = 1.0):
  """The jit-compiled data-parallel step ``(state, batch) -> (state, metrics)``.

  The loss is ``policy_coef * NLL + value_coef * value MSE``: SFT of the policy
  is ``(1, 0)``, training a critic's value head alone is ``(0, 1)``. The global
  batch's leading axis must be divisible by the mesh size.
  """
  num_devices = mesh.shape[DATA_AXIS]
  per_device = functools.partial(_per_device_step, config=config, optimizer=optimizer,
                                 value_coef=value_coef, policy_coef=policy_coef,
                                 num_devices=num_devices)
  step = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                       out_specs=(P(), P()), check_vma=False)
  replicated = NamedSharding(mesh, P())
  return jax.jit(step, donate_argnums=(0,),
                 out_shardings=(replicated, replicated))


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
              value_coef: float, policy_coef: float, min_size: int):
  """``(optimizer, jitted step)``, shared by every run with equal settings.

  The data-parallel step on a 1-D ``data`` mesh, the FSDP step
  (``sharding.make_fsdp_train_step``) on a ``("data", "fsdp")`` mesh.
  """
  lr, steps, warmup, weight_decay, grad_clip, end_lr = hparams
  optimizer = make_optimizer(lr, steps, warmup, end_learning_rate=end_lr,
                             weight_decay=weight_decay, grad_clip=grad_clip)
  if is_fsdp_mesh(mesh):
    from alphallm import sharding  # pylint: disable=import-outside-toplevel (imports train)
    return optimizer, sharding.make_fsdp_train_step(
        config, optimizer, mesh, value_coef=value_coef, policy_coef=policy_coef,
        min_size=min_size)
  return optimizer, make_train_step(config, optimizer, mesh, value_coef=value_coef,
                                    policy_coef=policy_coef)


def fit(cfg: Any, config: model_lib.TransformerConfig, dataset: dict[str, np.ndarray],
        init_params, mesh: Mesh, *, seed: int, ckpt_dir: str | None, value_coef: float = 0.0,
        policy_coef: float = 1.0, desc: str = "train", writer=None,
        min_size: int | None = None) -> tuple[Any, list[dict[str, float]]]:
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

  Returns:
    The final parameters and the metrics of the steps logged in this call.
  """
  # Imported here: checkpoint and data are host-side concerns of this loop only.
  from alphallm import checkpoint  # pylint: disable=import-outside-toplevel
  from alphallm import data  # pylint: disable=import-outside-toplevel
  import tqdm  # pylint: disable=import-outside-toplevel

  get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
  end_lr = get("end_learning_rate", None)
  hparams = (float(cfg.learning_rate), int(cfg.steps), int(cfg.warmup_steps),
             float(cfg.weight_decay), float(cfg.grad_clip),
             None if end_lr is None or end_lr < 0 else float(end_lr))
  fsdp = is_fsdp_mesh(mesh)
  if fsdp:
    from alphallm import sharding  # pylint: disable=import-outside-toplevel (imports train)
    min_size = sharding.DEFAULT_MIN_SIZE if min_size is None else int(min_size)
    place_batch = sharding.shard_batch
  else:
    min_size, place_batch = 0, shard_batch
  optimizer, step_fn = _compiled(config, hparams, mesh, float(value_coef), float(policy_coef),
                                 min_size)
  if fsdp:  # the moments are created sharded, never whole
    state = sharding.init_train_state(jax.tree.map(jnp.array, init_params), optimizer, seed,
                                      mesh, min_size)
  else:
    state = init_train_state(jax.tree.map(jnp.array, init_params), optimizer, seed)
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
      state, metrics = step_fn(state, batch)
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
  return state.params, history
