"""Fully sharded training (FSDP / ZeRO-3) for models that do not fit one device.

``alphallm.train`` keeps a full copy of the parameters and the optimizer state
on every device (data parallelism, a ``shard_map`` step with ``pmean``). That
is the fastest layout while it fits: a model of ``P`` parameters trained with
AdamW in float32 needs ``16 P`` bytes per device (parameters, gradients and
the two moments, 4 bytes each), plus activations. A 7B model already needs
~108 GB. This module shards parameters, gradients and optimizer state over the
devices instead, and lets XLA's SPMD partitioner (GSPMD) insert the
collectives: the step is an ordinary ``jax.jit`` with ``in_shardings`` /
``out_shardings``, not a ``shard_map``.

Mesh. A 2-D mesh with axes ``("data", "fsdp")`` (``make_mesh``):

* parameters, gradients and optimizer state are split over ``fsdp`` and
  replicated over ``data`` (hybrid sharding: ``mesh_shape=(1, n)`` is plain
  ZeRO-3 over all ``n`` devices, ``(r, n // r)`` keeps ``r`` replicas of a
  ``n // r``-way sharded model, which trades memory for less communication
  across the slower links, e.g. between hosts or TPU slices);
* the batch is split over both axes on its leading dimension
  (``P(("data", "fsdp"))``), so every device sees ``B / n`` examples.

Parameter rule (``fsdp_spec``), a function of the array shape only:

* tensors with fewer than 2 dimensions (RMSNorm scales, q/k/v biases, the
  value-head bias) or fewer than ``min_size`` elements are replicated;
* any other tensor is split over ``fsdp`` along its **largest axis whose size
  is divisible by the ``fsdp`` axis size** (ties: the first such axis); a
  large tensor with no divisible axis is replicated, with a warning.

For Llama-2-70B on 16-way ``fsdp`` this splits ``embed/embedding [V, D]`` and
``lm_head/kernel [D, V]`` along ``V = 32000``, ``q/k/v_proj/kernel
[D, N|K, H]`` along ``D = 8192``, ``o_proj/kernel [N, H, D]`` along ``D``,
``gate/up_proj/kernel [D, F]`` along ``F = 28672`` and ``down_proj/kernel
[F, D]`` along ``F``. Because the rule depends on the shape only, AdamW's
moments ``mu``/``nu`` (shaped like the parameters) get exactly their
parameter's sharding, and scalars (step counts) are replicated.

Activations. Inside the step the input and output of every decoder block,
projection and embedding are constrained to the batch sharding (through
``flax.linen.intercept_methods``, so ``alphallm.model`` is unchanged). That
pins the layout GSPMD partitions around: activations stay batch-sharded and
each weight is all-gathered for its matmul (and its gradient reduce-scattered
back), which is the FSDP schedule, rather than resharding activations to
match the weights.

Loss. As the data-parallel step: ``policy_coef * NLL / (global target
tokens) + value_coef * value SE / (global value targets)``, computed from
``train_core.loss_sums`` (``train.loss_sums``) over the whole global batch, so one FSDP step equals one
data-parallel step and one single-device step on the same batch (tested on 8
simulated CPU devices).

Multi-host. Build the mesh over ``jax.devices()`` (``alphallm.distributed``
does) and run the same program in every process. ``shard_batch`` expects
every process to hold the same global host batch (``data.batch_at`` is a
deterministic function of the step) and transfers only the rows of its own
devices.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from alphallm import memory
from alphallm import model as model_lib
from alphallm import train_core

log = logging.getLogger(__name__)

DATA_AXIS = train_core.DATA_AXIS     # "data": replicas of the (sharded) model
FSDP_AXIS = "fsdp"               # the axis parameters are split over
MESH_AXES = (DATA_AXIS, FSDP_AXIS)
BATCH_SPEC = P(MESH_AXES)        # leading (batch) axis over both mesh axes
# Below this many elements a tensor is replicated: all-gathering it would cost
# more in latency than its memory is worth (256 KiB in float32).
DEFAULT_MIN_SIZE = 2 ** 16

STRATEGIES = memory.STRATEGIES
ADAMW_F32_BYTES_PER_PARAM = memory.ADAMW_F32_BYTES_PER_PARAM
DEFAULT_HEADROOM = memory.DEFAULT_HEADROOM


# ---------------------------------------------------------------------------
# Mesh.


def make_mesh(mesh_shape: Sequence[int] = (1, -1), devices: Sequence[Any] | None = None
              ) -> Mesh:
  """A ``("data", "fsdp")`` mesh over ``devices`` (default: ``jax.devices()``).

  Args:
    mesh_shape: ``(data, fsdp)`` sizes; one of them may be ``-1`` (all the
      remaining devices). ``(1, -1)``: every device holds ``1/n`` of the model.
    devices: the devices to use, all of them; e.g. ``jax.local_devices()`` for
      a single-host mesh in a multi-host job.

  Returns:
    A mesh with ``AxisType.Auto`` axes (GSPMD propagates shardings), its
    devices ordered by ``jax.make_mesh`` for the physical topology (ICI rings
    on TPU). On a multi-slice TPU job the ``data`` axis spans the slices
    (``data`` must then be a multiple of the number of slices) so that only
    gradient all-reduces of the replicas cross the slower DCN links.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = _resolve_shape(mesh_shape, len(devices))
  types = (AxisType.Auto,) * len(MESH_AXES)
  slices = sorted({getattr(d, "slice_index", 0) or 0 for d in devices})
  if len(slices) > 1:
    from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
    if shape[0] % len(slices):
      raise ValueError(f"mesh_shape {tuple(shape)}: the data axis must be a multiple of the "
                       f"{len(slices)} TPU slices, which it spans")
    grid = mesh_utils.create_hybrid_device_mesh(
        (shape[0] // len(slices), shape[1]), (len(slices), 1), devices)
    return Mesh(grid, MESH_AXES, axis_types=types)
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=types, devices=devices)


def _resolve_shape(mesh_shape: Sequence[int], num_devices: int) -> tuple[int, int]:
  shape = [int(s) for s in mesh_shape]
  if len(shape) != 2:
    raise ValueError(f"mesh_shape must be (data, fsdp), got {tuple(mesh_shape)!r}")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh_shape {tuple(mesh_shape)!r}: sizes must be positive, at most one "
                     "may be -1")
  if -1 in shape:
    known = -math.prod(shape)
    if num_devices % known:
      raise ValueError(f"mesh_shape {tuple(mesh_shape)!r} does not divide the {num_devices} "
                       "devices")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(f"mesh_shape {tuple(shape)} needs {math.prod(shape)} devices, "
                     f"{num_devices} given")
  return shape[0], shape[1]


def _check_mesh(mesh: Mesh) -> None:
  missing = [a for a in MESH_AXES if a not in mesh.shape]
  if missing:
    raise ValueError(f"mesh axes {mesh.axis_names} lack {missing}: build the mesh with "
                     "alphallm.sharding.make_mesh")
  explicit = [name for name, t in zip(mesh.axis_names, mesh.axis_types)
              if t == AxisType.Explicit]
  if explicit:
    raise ValueError(f"mesh axes {explicit} are AxisType.Explicit; the FSDP step is "
                     "partitioned by GSPMD and needs AxisType.Auto axes (jax.make_mesh "
                     "defaults to Explicit: use alphallm.sharding.make_mesh)")


def fsdp_size(mesh: Mesh) -> int:
  return mesh.shape[FSDP_AXIS]


def batch_size_multiple(mesh: Mesh) -> int:
  """The global batch's leading axis must be a multiple of this (all devices)."""
  return mesh.shape[DATA_AXIS] * mesh.shape[FSDP_AXIS]


# ---------------------------------------------------------------------------
# The sharding rule.


def fsdp_spec(shape: Sequence[int], num_shards: int, min_size: int = DEFAULT_MIN_SIZE) -> P:
  """The partition spec of one array under the FSDP rule (module docstring).

  Args:
    shape: the array's shape.
    num_shards: the size of the ``fsdp`` mesh axis.
    min_size: arrays with fewer elements are replicated.

  Returns:
    ``P()`` (replicated) or a spec with ``"fsdp"`` on the largest axis whose
    size is a multiple of ``num_shards`` (the first of equal ones).
  """
  shape = tuple(int(s) for s in shape)
  if num_shards <= 1 or len(shape) < 2 or math.prod(shape) < min_size:
    return P()
  divisible = [(size, -axis) for axis, size in enumerate(shape) if size % num_shards == 0]
  if not divisible:
    return P()
  axis = -max(divisible)[1]
  return P(*(FSDP_AXIS if i == axis else None for i in range(len(shape))))


def _shape(x: Any) -> tuple[int, ...]:
  return tuple(np.shape(x))


def param_sharding(params: Any, mesh: Mesh, min_size: int = DEFAULT_MIN_SIZE) -> Any:
  """A pytree of ``NamedSharding`` shaped like ``params`` (arrays or ShapeDtypeStructs).

  Large tensors no axis of which divides the ``fsdp`` size are replicated and
  logged as a warning (they cost full memory on every device).
  """
  _check_mesh(mesh)
  n = fsdp_size(mesh)
  unsplit = []

  def one(path, x):
    shape = _shape(x)
    spec = fsdp_spec(shape, n, min_size)
    if n > 1 and spec == P() and len(shape) >= 2 and math.prod(shape) >= min_size:
      unsplit.append(f"{jax.tree_util.keystr(path)} {list(shape)}")
    return NamedSharding(mesh, spec)

  out = jax.tree_util.tree_map_with_path(one, params)
  if unsplit:
    log.warning("FSDP: %d large tensor(s) have no axis divisible by fsdp=%d and are "
                "replicated: %s", len(unsplit), n, ", ".join(unsplit[:8]))
  return out


def hf_param_sharding(mesh: Mesh, min_size: int = DEFAULT_MIN_SIZE
                      ) -> Callable[[tuple[str, ...], tuple[int, ...]], NamedSharding]:
  """The rule as the ``sharding`` function of ``hf_import.load_hf_checkpoint``.

  Each device then receives only its slice of every tensor as it is read, so
  a model larger than one device's memory loads without ever being whole on
  any device.
  """
  _check_mesh(mesh)
  n = fsdp_size(mesh)
  return lambda path, shape: NamedSharding(mesh, fsdp_spec(shape, n, min_size))


def train_state_sharding(state: train_core.TrainState, mesh: Mesh,
                         min_size: int = DEFAULT_MIN_SIZE) -> train_core.TrainState:
  """A ``TrainState`` of shardings: params and optimizer state by the rule, the rest replicated.

  ``state`` may hold arrays or ``jax.ShapeDtypeStruct`` (see
  ``abstract_train_state``).
  """
  replicated = NamedSharding(mesh, P())
  return train_core.TrainState(
      step=replicated, rng=replicated,
      params=param_sharding(state.params, mesh, min_size),
      opt_state=param_sharding(state.opt_state, mesh, min_size))


def abstract_train_state(config: model_lib.TransformerConfig,
                         optimizer: optax.GradientTransformation) -> train_core.TrainState:
  """The shapes and dtypes of a ``TrainState`` for ``config`` (nothing is allocated)."""
  def init():
    params = model_lib.Transformer(config).init(
        jax.random.key(0), jnp.zeros((1, 2), jnp.int32))["params"]
    return train_core.init_train_state(params, optimizer, 0)
  return jax.eval_shape(init)


# ---------------------------------------------------------------------------
# Placement.


def _place(x: Any, sharding: NamedSharding) -> jax.Array:
  """Puts one array on the mesh; with several processes each sends only its own shards."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return jax.device_put(x, sharding)          # already global: reshard on device
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  host = np.asarray(x)                          # same value in every process
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_params(params: Any, mesh: Mesh, min_size: int = DEFAULT_MIN_SIZE) -> Any:
  """``params`` placed by the FSDP rule."""
  return jax.tree.map(_place, params, param_sharding(params, mesh, min_size))


def shard_train_state(state: train_core.TrainState, mesh: Mesh,
                      min_size: int = DEFAULT_MIN_SIZE) -> train_core.TrainState:
  """``state`` placed on ``mesh``: params and optimizer state sharded over ``fsdp``.

  For a model that does not fit one device, build the state sharded from the
  start instead (``init_train_state``), from parameters loaded sharded
  (``hf_param_sharding``).
  """
  return jax.tree.map(_place, state, train_state_sharding(state, mesh, min_size))


def init_train_state(params: Any, optimizer: optax.GradientTransformation, seed: int,
                     mesh: Mesh, min_size: int = DEFAULT_MIN_SIZE) -> train_core.TrainState:
  """``train_core.init_train_state`` with the optimizer state created already sharded.

  ``params`` are placed by the rule first (a no-op when they were loaded with
  ``hf_param_sharding``); the moments are then allocated shard by shard on
  their devices, never whole.
  """
  params = shard_params(params, mesh, min_size)
  init = functools.partial(train_core.init_train_state, optimizer=optimizer, seed=seed)
  shardings = train_state_sharding(jax.eval_shape(init, params), mesh, min_size)
  return jax.jit(init, out_shardings=shardings)(params)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis over ``("data", "fsdp")``; other axes whole."""
  return NamedSharding(mesh, BATCH_SPEC)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """A host batch (the same global batch in every process) split over all devices."""
  n = batch_size_multiple(mesh)
  for key, value in batch.items():
    if np.shape(value)[0] % n:
      raise ValueError(
          f"batch[{key!r}] has leading size {np.shape(value)[0]}, not divisible by the {n} "
          f"devices of the mesh {dict(mesh.shape)}")
  sharding = batch_sharding(mesh)
  return {k: _place(v, sharding) for k, v in batch.items()}


def bytes_per_device(tree: Any) -> dict[Any, int]:
  """Bytes of ``tree``'s arrays that each (addressable) device holds."""
  out: dict[Any, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
  return out


# ---------------------------------------------------------------------------
# The step.


# Module methods whose inputs and outputs are batch-leading activations.
_ACTIVATION_METHODS = ((model_lib.Block, ("__call__",)), (nn.Dense, ("__call__",)),
                       (nn.DenseGeneral, ("__call__",)), (nn.Embed, ("__call__", "attend")))


@contextlib.contextmanager
def _batch_sharded_activations(mesh: Mesh):
  """Pins activations ``[B, ...]`` to the batch sharding around every weight use.

  The input and output of each decoder block, projection (``Dense``,
  ``DenseGeneral``) and embedding lookup / tied output (``Embed``) are
  constrained to ``P(("data", "fsdp"))``. With both sides of each matmul
  batch-sharded the partitioner's only consistent choice is to all-gather the
  (fsdp-sharded) weight for the forward pass and reduce-scatter its gradient:
  the FSDP schedule. Without the constraints GSPMD may instead reshard
  activations to match the weights (tensor-parallel style, with full
  rematerialisations of activations).
  """
  sharding = batch_sharding(mesh)

  def constrain(x):
    if isinstance(x, jax.Array) and x.ndim >= 1:
      return jax.lax.with_sharding_constraint(x, sharding)
    return x

  def interceptor(next_fun, args, kwargs, context):
    for cls, methods in _ACTIVATION_METHODS:
      if isinstance(context.module, cls) and context.method_name in methods:
        break
    else:
      return next_fun(*args, **kwargs)
    if not args:
      return next_fun(*args, **kwargs)
    out = next_fun(constrain(args[0]), *args[1:], **kwargs)
    if isinstance(out, tuple):           # Block: (x, (k, v))
      return (constrain(out[0]),) + tuple(out[1:])
    return constrain(out)

  with nn.intercept_methods(interceptor):
    yield


def make_fsdp_train_step(config: model_lib.TransformerConfig,
                         optimizer: optax.GradientTransformation, mesh: Mesh,
                         value_coef: float = 0.0, policy_coef: float = 1.0, *,
                         min_size: int = DEFAULT_MIN_SIZE,
                         state_sharding: train_core.TrainState | None = None,
                         constrain_activations: bool = True):
  """The jit-compiled FSDP step ``(state, batch) -> (state, metrics)``.

  Same contract as ``train.make_train_step``: the loss is ``policy_coef *
  NLL + value_coef * value MSE``, both normalised by the global counts; the
  metrics are the same (``loss``, ``token_accuracy``, ``grad_norm``,
  ``tokens``, ``value_mse``) and replicated.

  Args:
    config: the model.
    optimizer: e.g. ``train.make_optimizer(...)``.
    mesh: a ``("data", "fsdp")`` mesh from ``make_mesh``.
    value_coef: weight of the value-head MSE.
    policy_coef: weight of the policy NLL.
    min_size: the rule's replication threshold; must match the one the state
      was placed with (``shard_train_state`` / ``init_train_state``).
    state_sharding: the state's shardings; default: the rule applied to
      ``abstract_train_state(config, optimizer)``.
    constrain_activations: pin block activations to the batch sharding (see
      the module docstring); False leaves the layout entirely to GSPMD.

  Returns:
    ``step(state, batch)`` with ``state`` placed by ``state_sharding``
    (donated) and ``batch`` a dict of ``[B, ...]`` arrays (``tokens``,
    ``token_mask``, ``loss_mask``, optionally ``value_target``/``value_mask``;
    see ``train.loss_sums``), ``B`` a
    multiple of the device count. Gradients and the new optimizer state stay
    sharded like the parameters.
  """
  _check_mesh(mesh)
  if state_sharding is None:
    state_sharding = train_state_sharding(abstract_train_state(config, optimizer), mesh,
                                          min_size)
  param_shardings = state_sharding.params
  replicated = NamedSharding(mesh, P())
  blocks = (functools.partial(_batch_sharded_activations, mesh) if constrain_activations
            else contextlib.nullcontext)

  def step(state: train_core.TrainState, batch):
    def loss_fn(params):
      with blocks():
        sums = train_core.loss_sums(params, config, batch)
      loss = policy_coef * sums["nll_sum"] / jnp.maximum(sums["tokens"], 1.0)
      if "value_se_sum" in sums and value_coef:
        loss = loss + value_coef * sums["value_se_sum"] / jnp.maximum(sums["value_count"], 1.0)
      return loss, sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.with_sharding_constraint(grads, param_shardings)  # reduce-scatter
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = train_core.sft_metrics(sums, grads)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return jax.jit(step, in_shardings=(state_sharding, batch_sharding(mesh)),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,))


# ---------------------------------------------------------------------------
# Memory planning lives in ``alphallm.memory``; these aliases keep old callers working.

training_bytes = memory.training_bytes
kv_bytes_per_token = memory.kv_bytes_per_token
search_memory_bytes = memory.search_memory_bytes
choose_strategy = memory.choose_strategy
llama2_config = memory.llama2_config
