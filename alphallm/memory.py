"""Memory planning: what a training state, a KV cache and a search cost, and what fits.

Moved out of ``alphallm.sharding`` (which keeps the layouts). Numbers are
bytes; GB below means 1e9 bytes. Activations are not counted: the planner
leaves a ``headroom`` fraction of each device for them, the compiler's
workspace and fragmentation (with ``model.remat`` a block keeps ~2 D bytes per
token).

Full fine-tuning with AdamW in float32 costs ``16 P`` bytes (parameters,
gradients, ``mu``, ``nu``). LoRA (``alphallm.lora``) trains only the adapters:
``16 P_lora`` bytes for them, plus the frozen base in its storage dtype (no
gradient, no moments) and, as an upper bound, one merged copy of the targeted
kernels in the parameter dtype (``lora.merge`` feeds the plain forward; XLA
may keep all merged kernels live until the backward pass uses them).

``plan`` says which layout a state fits. Note: the LoRA step exists for the
data-parallel layout only (``train.make_lora_train_step``); a LoRA state that
``plan`` puts on ``"fsdp"`` still needs an FSDP LoRA step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from alphallm import lora as lora_lib
from alphallm import model as model_lib
from alphallm.search import mcts

STRATEGIES = ("data_parallel", "fsdp")
# Training bytes per parameter, AdamW with float32 parameters, gradients, mu, nu.
ADAMW_F32_BYTES_PER_PARAM = 16
# Fraction of device memory ``choose_strategy`` leaves for activations,
# the compiler's workspace and fragmentation.
DEFAULT_HEADROOM = 0.3


def training_bytes(num_params: int, bytes_per_param: int = ADAMW_F32_BYTES_PER_PARAM) -> int:
  """Parameters + gradients + optimizer state, without activations.

  ``bytes_per_param``: 16 for AdamW with float32 master weights (4 + 4 + 4 +
  4); 8 when parameters, gradients and moments are all bfloat16 (optax keeps
  the moments in the parameters' dtype).
  """
  return int(num_params) * int(bytes_per_param)


def kv_bytes_per_token(config: model_lib.TransformerConfig, dtype: str | None = None) -> int:
  """KV-cache bytes one token costs: ``2 (k, v) * L * K * H * itemsize``."""
  item = jnp.dtype(dtype or config.dtype).itemsize
  return 2 * config.num_layers * config.num_kv_heads * config.head_dim * item


def search_memory_bytes(model_config: model_lib.TransformerConfig, search_config: Any,
                        prompt_len: int, batch_size: int = 1) -> dict[str, int]:
  """Bytes one eta-MCTS call holds besides the parameters (an upper bound).

  Args:
    model_config: the policy (its ``dtype`` is the KV-cache dtype).
    search_config: a ``default_search_config()``-like config.
    prompt_len: ``P``, the prompt slots.
    batch_size: ``B``, problems searched together.

  Returns:
    ``{"nodes", "prompt_kv", "candidate_kv", "rollout_kv", "total"}``: the
    tree (``num_simulations + 1`` nodes of ``mcts.bytes_per_node``: each
    keeps its path's keys/values, ``[L, C, K, H]``), the prompt's cache, the
    cache of the ``B * A`` rows sampling candidate options (``P + C + O``
    slots; ``A`` the larger of the root's and an interior node's candidate
    count) and of the ``B * num_rollouts`` fast-rollout rows (``P + C +
    rollout.max_len`` slots). The last two are transient; counting both
    bounds the peak from above.
  """
  cfg = mcts.SearchConfig.from_config(search_config)
  kv = kv_bytes_per_token(model_config)
  c, o = cfg.max_completion_len, cfg.option_len
  out = {
      "nodes": batch_size * (cfg.num_simulations + 1)
               * mcts.bytes_per_node(model_config, cfg)["total"],
      "prompt_kv": batch_size * prompt_len * kv,
      "candidate_kv": batch_size * max(cfg.root_candidates, cfg.interior_candidates)
                      * (prompt_len + c + o) * kv,
      "rollout_kv": (batch_size * cfg.rollout.num_rollouts
                     * (prompt_len + c + cfg.rollout.max_len) * kv
                     if cfg.rollout.enabled else 0),
  }
  out["total"] = sum(out.values())
  return out


def _check_device(num_params: int, bytes_per_device: int, headroom: float) -> None:
  if num_params <= 0 or bytes_per_device <= 0:
    raise ValueError(f"need positive num_params and bytes_per_device, got {num_params}, "
                     f"{bytes_per_device}")
  if not 0.0 <= headroom < 1.0:
    raise ValueError(f"headroom must be in [0, 1), got {headroom}")


def choose_strategy(num_params: int, bytes_per_device: int, *,
                    bytes_per_param: int = ADAMW_F32_BYTES_PER_PARAM,
                    headroom: float = DEFAULT_HEADROOM) -> str:
  """``"data_parallel"`` if a full training state fits one device, else ``"fsdp"``.

  Args:
    num_params: model parameters (``TransformerConfig.num_params()``).
    bytes_per_device: accelerator memory of one device (e.g. 80e9 for an
      H100-80GB, 95e9 for a TPU v5p chip, 32e9 for a v4 chip).
    bytes_per_param: training bytes per parameter (``training_bytes``).
    headroom: fraction of the device kept for activations and workspace.

  Returns:
    ``"data_parallel"`` (``train.make_train_step``: replicated state, the
    fastest while it fits) when ``num_params * bytes_per_param <= (1 -
    headroom) * bytes_per_device``; otherwise ``"fsdp"``
    (``sharding.make_fsdp_train_step``). E.g. on 80 GB devices with the
    defaults: up to 3.5B parameters stay data-parallel; 7B, 13B and 70B need
    FSDP.
  """
  _check_device(num_params, bytes_per_device, headroom)
  fits = training_bytes(num_params, bytes_per_param) <= (1.0 - headroom) * bytes_per_device
  return "data_parallel" if fits else "fsdp"


def llama2_config(size: str, dtype: str = "bfloat16",
                  param_dtype: str = "float32") -> model_lib.TransformerConfig:
  """Llama-2 7B / 13B / 70B architectures (HF config.json values), for memory planning."""
  common = dict(vocab_size=32000, head_dim=128, max_len=4096, norm_eps=1e-5,
                tie_embeddings=False, dtype=dtype, param_dtype=param_dtype)
  sizes = {
      "7b": dict(num_layers=32, embed_dim=4096, num_heads=32, num_kv_heads=32, mlp_dim=11008),
      "13b": dict(num_layers=40, embed_dim=5120, num_heads=40, num_kv_heads=40, mlp_dim=13824),
      "70b": dict(num_layers=80, embed_dim=8192, num_heads=64, num_kv_heads=8, mlp_dim=28672),
  }
  if size not in sizes:
    raise ValueError(f"unknown Llama-2 size {size!r}; known: {sorted(sizes)}")
  return model_lib.TransformerConfig(**common, **sizes[size])


# ---------------------------------------------------------------------------
# LoRA.


def projection_shapes(config: model_lib.TransformerConfig) -> dict[str, tuple[int, int]]:
  """``(I, O)`` of each projection of one block, as ``lora.matrix_shape`` sees it."""
  d, n, k, h, f = (config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim,
                   config.mlp_dim)
  return {"q_proj": (d, n * h), "k_proj": (d, k * h), "v_proj": (d, k * h),
          "o_proj": (n * h, d), "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}


def lora_num_params(config: model_lib.TransformerConfig, cfg: lora_lib.LoraConfig) -> int:
  """Adapter parameters: ``L * sum_targets r (I + O)`` (= ``lora.num_trainable``)."""
  shapes = projection_shapes(config)
  return config.num_layers * sum(cfg.rank * sum(shapes[t]) for t in cfg.targets)


def _target_counts(config: model_lib.TransformerConfig, cfg: lora_lib.LoraConfig
                   ) -> tuple[int, int]:
  """``(kernel elements, output channels)`` of all targeted kernels."""
  shapes = projection_shapes(config)
  elems = config.num_layers * sum(shapes[t][0] * shapes[t][1] for t in cfg.targets)
  channels = config.num_layers * sum(shapes[t][1] for t in cfg.targets)
  return elems, channels


def lora_training_bytes(config: model_lib.TransformerConfig, cfg: lora_lib.LoraConfig,
                        include_value_head: bool = True) -> dict[str, int]:
  """Bytes of a LoRA training state, without activations.

  Returns:
    ``{"base", "adapters", "gradients", "optimizer", "merged", "total",
    "total_without_merged"}``: the frozen base (targeted kernels in
    ``cfg.base_dtype``, int8 with a float32 scale per output channel; every
    other parameter in ``config.param_dtype``), the adapters and their
    gradients in the parameter dtype, AdamW's two moments (same dtype), and
    the merged copy of the targeted kernels (parameter dtype, an upper bound
    of what the merge keeps live; 0 if XLA fuses it into each matmul).
  """
  item = jnp.dtype(config.param_dtype).itemsize
  elems, channels = _target_counts(config, cfg)
  rest = config.num_params(include_value_head) - elems
  if cfg.base_dtype == "int8":
    stored = elems + 4 * channels
  else:
    stored = elems * jnp.dtype(cfg.base_dtype).itemsize
  n = lora_num_params(config, cfg)
  out = {"base": stored + rest * item, "adapters": n * item, "gradients": n * item,
         "optimizer": 2 * n * item, "merged": elems * item}
  out["total_without_merged"] = sum(v for k, v in out.items() if k != "merged")
  out["total"] = out["total_without_merged"] + out["merged"]
  return out


@dataclasses.dataclass(frozen=True)
class Fit:
  """Whether a training state fits ``num_devices`` devices of ``bytes_per_device``.

  ``per_device`` assumes the FSDP rule splits every large tensor evenly
  (``data_parallel`` replicates all of it); ``budget`` is ``(1 - headroom) *
  bytes_per_device``.
  """

  strategy: str          # "data_parallel", "fsdp" or "does_not_fit"
  total: int
  per_device: int
  budget: int


def plan(total_bytes: int, num_devices: int, bytes_per_device: int,
         headroom: float = DEFAULT_HEADROOM) -> Fit:
  """The cheapest layout a state of ``total_bytes`` fits: replicated, sharded or none."""
  _check_device(max(total_bytes, 1), bytes_per_device, headroom)
  if num_devices <= 0:
    raise ValueError(f"num_devices must be positive, got {num_devices}")
  budget = int((1.0 - headroom) * bytes_per_device)
  if total_bytes <= budget:
    return Fit("data_parallel", total_bytes, total_bytes, budget)
  per_device = -(-total_bytes // num_devices)
  return Fit("fsdp" if per_device <= budget else "does_not_fit", total_bytes, per_device,
             budget)
