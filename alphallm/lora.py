"""LoRA: low-rank adapters on the attention and MLP projections (Hu et al., 2021).

For a projection kernel ``W`` (seen as a matrix ``[I, O]``: its input axes
flattened to ``I``, its output axes to ``O``) LoRA trains two small matrices
``A [I, r]`` and ``B [r, O]`` and uses

    W' = W + (alpha / r) * A @ B

with ``W`` frozen. ``A`` starts Gaussian (std ``1 / sqrt(I)``, Kaiming's
fan-in scale), ``B`` at zero, so step 0 is exactly the base model. Only the
adapters have gradients and optimizer state: a Llama-2-70B with rank 16 on
all seven projections trains 0.2 B parameters instead of 69 B.

Parameter tree paths (``alphallm.model``), all kernels of ``Dense`` /
``DenseGeneral`` modules:

* ``layer_{i}/attn/{q,k,v}_proj/kernel``: ``[D, N|K, H]`` (input axes: 1);
* ``layer_{i}/attn/o_proj/kernel``: ``[N, H, D]`` (input axes: 2);
* ``layer_{i}/mlp/{gate,up}_proj/kernel``: ``[D, F]``; ``down_proj``: ``[F, D]``.

The adapters tree mirrors those paths: ``adapters["layer_0"]["attn"]["q_proj"]
== {"a": [I, r], "b": [r, O]}``, in the original kernel's dtype (so a merge
restores it).

Frozen base storage (``LoraConfig.base_dtype``): ``"float32"`` / ``"bfloat16"``
store the targeted kernels cast to that dtype; ``"int8"`` stores them as
``{"int8": q, "scale": s}`` with per-output-channel absmax scales
(``s = max_I |W| / 127``, ``q = round(W / s)``), dequantised on the fly in
``merge``. The int8 error is at most half a step per element,
``|W - q s| <= s / 2 = max_I |W| / 254`` (tested), i.e. below 0.4% of each
output channel's largest weight; bfloat16 rounds to 8 significant bits
(relative error <= 2^-9). Every other parameter (embeddings, norms, biases, the
value head) is frozen too and kept as it is.

Two forwards give the same result (tested): ``merge`` then the plain model
(what training and export use), and ``apply`` (the unmerged low-rank branch
``x @ W + s (x @ A) @ B`` added to each targeted projection's output through
``flax.linen.intercept_methods``, float bases only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
ALL_TARGETS = ATTENTION_TARGETS + MLP_TARGETS
BASE_DTYPES = ("float32", "bfloat16", "int8")
# Input axes of each projection's kernel (the rest are output axes).
_INPUT_AXES = {"o_proj": 2}
INT8_MAX = 127.0


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """LoRA hyper-parameters.

  Attributes:
    rank: ``r``, the adapters' inner width.
    alpha: the update is scaled by ``alpha / rank``.
    targets: projection names (a subset of ``ALL_TARGETS``) that get adapters.
    base_dtype: storage of the frozen targeted kernels: ``"float32"``,
      ``"bfloat16"`` or ``"int8"`` (see the module docstring).
  """

  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = ALL_TARGETS
  base_dtype: str = "float32"

  def __post_init__(self):
    if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank <= 0:
      raise ValueError(f"LoraConfig.rank must be a positive int, got {self.rank!r}")
    if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) \
        or self.alpha <= 0:
      raise ValueError(f"LoraConfig.alpha must be a positive number, got {self.alpha!r}")
    targets = tuple(self.targets) if not isinstance(self.targets, str) else (self.targets,)
    unknown = [t for t in targets if t not in ALL_TARGETS]
    if unknown or not targets or len(set(targets)) != len(targets):
      raise ValueError(f"LoraConfig.targets {targets!r}: need distinct names from "
                       f"{ALL_TARGETS}" + (f"; unknown {unknown}" if unknown else ""))
    object.__setattr__(self, "targets", targets)
    if self.base_dtype not in BASE_DTYPES:
      raise ValueError(f"LoraConfig.base_dtype must be one of {BASE_DTYPES}, got "
                       f"{self.base_dtype!r}")

  @property
  def scale(self) -> float:
    return float(self.alpha) / self.rank


# ---------------------------------------------------------------------------
# Paths and shapes.


def _module_name(path: tuple[str, ...]) -> str:
  return path[-2] if len(path) >= 2 else ""


def target_paths(params: Any, cfg: LoraConfig) -> list[tuple[str, ...]]:
  """Paths of the kernels that get adapters, e.g. ``("layer_0", "attn", "q_proj")``.

  Raises ``ValueError`` naming a target that no kernel of ``params`` matches.
  """
  flat = traverse_util.flatten_dict(_as_dict(params))
  paths = sorted(p[:-1] for p in flat if p[-1] == "kernel" and _module_name(p) in cfg.targets)
  found = {p[-1] for p in paths}
  missing = [t for t in cfg.targets if t not in found]
  if missing:
    raise ValueError(f"LoraConfig.targets {missing} match no '<name>/kernel' in the params")
  return paths


def matrix_shape(name: str, shape: Sequence[int]) -> tuple[int, int]:
  """``(I, O)``: a kernel of projection ``name`` seen as a matrix."""
  n_in = _INPUT_AXES.get(name, 1)
  return math.prod(shape[:n_in]), math.prod(shape[n_in:])


def _as_dict(tree: Any) -> dict:
  return dict(tree) if not isinstance(tree, dict) else tree


def _get(tree: dict, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


# ---------------------------------------------------------------------------
# Adapters.


def init_adapters(params: Any, cfg: LoraConfig, rng: jax.Array) -> dict:
  """Fresh adapters for ``params``: ``A ~ N(0, 1/I)``, ``B = 0`` (step 0 = the base).

  Args:
    params: the base model's parameters (``alphallm.model`` tree).
    cfg: the LoRA config.
    rng: a PRNG key; each target's ``A`` uses ``fold_in(rng, index)``.

  Returns:
    ``{path...: {"a": [I, r], "b": [r, O]}}`` in each kernel's dtype.
  """
  out: dict = {}
  for i, path in enumerate(target_paths(params, cfg)):
    kernel = _get(params, path + ("kernel",))
    n_in, n_out = matrix_shape(path[-1], kernel.shape)
    dtype = kernel.dtype
    a = jax.random.normal(jax.random.fold_in(rng, i), (n_in, cfg.rank), jnp.float32)
    out[path] = {"a": (a / math.sqrt(n_in)).astype(dtype),
                 "b": jnp.zeros((cfg.rank, n_out), dtype)}
  return traverse_util.unflatten_dict(out)


def num_trainable(adapters: Any) -> int:
  """Number of adapter parameters."""
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(adapters)))


def trainable_mask(params: Any, cfg: LoraConfig) -> Any:
  """A tree like ``params``: True at the kernels that get adapters.

  With LoRA none of ``params`` is trained (the adapters are); the mask names
  what the adapters update, e.g. for ``optax.masked`` in a partial fine-tune.
  """
  targets = set(target_paths(params, cfg))
  flat = traverse_util.flatten_dict(_as_dict(params))
  return traverse_util.unflatten_dict(
      {p: (p[:-1] in targets and p[-1] == "kernel") for p in flat})


def partition(params: Any, cfg: LoraConfig) -> tuple[dict, dict]:
  """``(targets, rest)``: the targeted kernels and every other parameter (two flat dicts)."""
  targets = set(target_paths(params, cfg))
  flat = traverse_util.flatten_dict(_as_dict(params))
  hit = {p: v for p, v in flat.items() if p[:-1] in targets and p[-1] == "kernel"}
  return hit, {p: v for p, v in flat.items() if p not in hit}


def delta(adapter: dict, name: str, shape: Sequence[int], scale: float) -> jax.Array:
  """``scale * A @ B`` reshaped to the kernel ``shape`` (float32)."""
  a, b = adapter["a"].astype(jnp.float32), adapter["b"].astype(jnp.float32)
  return (scale * (a @ b)).reshape(tuple(shape))


# ---------------------------------------------------------------------------
# Frozen base storage.


def quantize_int8(w: jax.Array, name: str) -> dict[str, jax.Array]:
  """Per-output-channel absmax int8: ``{"int8": q [w.shape], "scale": s [O axes]}``."""
  n_in = _INPUT_AXES.get(name, 1)
  w32 = jnp.asarray(w, jnp.float32)
  absmax = jnp.max(jnp.abs(w32), axis=tuple(range(n_in)))
  scale = jnp.where(absmax > 0, absmax / INT8_MAX, 1.0)
  q = jnp.clip(jnp.round(w32 / scale), -INT8_MAX, INT8_MAX).astype(jnp.int8)
  return {"int8": q, "scale": scale.astype(jnp.float32)}


def dequantize(stored: Any) -> jax.Array:
  """A stored kernel (an array of any dtype, or ``quantize_int8``'s dict) in float32."""
  if isinstance(stored, dict):
    return stored["int8"].astype(jnp.float32) * stored["scale"]
  return jnp.asarray(stored).astype(jnp.float32)


def freeze_base(params: Any, cfg: LoraConfig) -> dict:
  """The frozen base: targeted kernels stored in ``cfg.base_dtype``, the rest unchanged."""
  hit, rest = partition(params, cfg)
  out = dict(rest)
  for path, w in hit.items():
    if cfg.base_dtype == "int8":
      out[path] = quantize_int8(w, path[-2])
    else:
      out[path] = jnp.asarray(w).astype(cfg.base_dtype)
  return traverse_util.unflatten_dict(out)


def base_bytes(frozen: Any) -> int:
  """Bytes of a frozen base as stored (int8 kernels count their scales)."""
  return int(sum(np.prod(np.shape(x)) * np.dtype(x.dtype).itemsize
                 for x in jax.tree.leaves(frozen)))


# ---------------------------------------------------------------------------
# Merge and export.


def merge(params: Any, adapters: Any, cfg: LoraConfig) -> dict:
  """Full parameters ``W + (alpha/r) A @ B`` for the plain ``alphallm.model`` forward.

  Args:
    params: the base, as ``freeze_base`` stores it or unfrozen.
    adapters: ``init_adapters``' tree (possibly trained).
    cfg: the LoRA config.

  Returns:
    A parameter tree with every targeted kernel merged, in its adapter's dtype
    (the original kernel dtype); other leaves as given. Differentiable in
    ``adapters``.
  """
  flat_ad = traverse_util.flatten_dict(_as_dict(adapters))
  modules = sorted({p[:-1] for p in flat_ad})
  out = dict(traverse_util.flatten_dict(_as_dict(params), is_leaf=_is_kernel_dict))
  for path in modules:
    key = path + ("kernel",)
    if key not in out:
      raise ValueError(f"lora.merge: adapter {'/'.join(path)} has no kernel in the params")
    adapter = {"a": flat_ad[path + ("a",)], "b": flat_ad[path + ("b",)]}
    w = dequantize(out[key])
    out[key] = (w + delta(adapter, path[-1], w.shape, cfg.scale)).astype(adapter["a"].dtype)
  return traverse_util.unflatten_dict(out)


def _is_kernel_dict(path, x) -> bool:
  del path
  return isinstance(x, dict) and set(x) == {"int8", "scale"}


def export_merged(params: Any, adapters: Any, cfg: LoraConfig) -> dict:
  """``merge`` for export: a plain parameter tree, kernels in their original dtype."""
  return jax.tree.map(jnp.asarray, merge(params, adapters, cfg))


# ---------------------------------------------------------------------------
# The unmerged forward.


@contextlib.contextmanager
def adapters_applied(adapters: Any, cfg: LoraConfig):
  """Inside, each targeted ``Dense``/``DenseGeneral`` adds ``s (x @ A) @ B`` to its output.

  The module's own kernel is used as stored, so this needs a float base
  (``freeze_base`` with ``"float32"``/``"bfloat16"``, or the unfrozen params).
  """
  flat_ad = traverse_util.flatten_dict(_as_dict(adapters))

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, (nn.Dense, nn.DenseGeneral)):
      return next_fun(*args, **kwargs)
    path = tuple(module.path)
    if path + ("a",) not in flat_ad:
      return next_fun(*args, **kwargs)
    out = next_fun(*args, **kwargs)
    a, b = flat_ad[path + ("a",)], flat_ad[path + ("b",)]
    x = args[0]
    n_in = _INPUT_AXES.get(path[-1], 1)
    lead = x.shape[:x.ndim - n_in]
    low = x.reshape(lead + (-1,)).astype(jnp.float32) @ a.astype(jnp.float32)
    up = (cfg.scale * low @ b.astype(jnp.float32)).reshape(out.shape)
    return (out.astype(jnp.float32) + up).astype(out.dtype)

  with nn.intercept_methods(interceptor):
    yield
