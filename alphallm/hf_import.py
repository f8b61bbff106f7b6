"""Import Hugging Face Llama-2/3 and Qwen2/2.5 checkpoints from a local directory.

Reads a directory written by ``transformers``' ``save_pretrained`` (or
downloaded beforehand by the user; this module never touches the network):

* ``config.json``: mapped to a :class:`~alphallm.model.TransformerConfig` by
  :func:`config_from_hf`;
* ``model.safetensors``, or shards listed in ``model.safetensors.index.json``:
  mapped to the Linen parameter tree of :class:`~alphallm.model.Transformer`
  by :func:`load_hf_checkpoint`.

Supported: ``model_type`` ``"llama"`` (Llama-2, Llama-3, Llama-3.1/3.2 with
their ``"llama3"`` rope scaling; tied or untied embeddings, grouped-query
attention) and ``"qwen2"`` (Qwen2, Qwen2.5; q/k/v biases, tied embeddings in
the 0.5B-3B sizes; ``sliding_window`` / ``max_window_layers`` are read by HF
only when ``use_sliding_window`` is true, which no Qwen2.5 release sets).
Anything the model cannot represent (other rope scalings such as ``"yarn"``,
``"linear"``, ``"dynamic"``, Gemma's norm/embedding/MLP variants, sliding
windows, biases on o_proj or the MLP, quantised weights) is refused with a
one-line error naming the file and config key, never silently approximated.

Tensor layout (HF ``nn.Linear`` weights are ``[out, in]``)::

  model.embed_tokens.weight         [V, D]    -> embed/embedding          [V, D]
  layers.i.self_attn.q_proj.weight  [N*H, D]  -> layer_i/attn/q_proj/kernel [D, N, H]
  layers.i.self_attn.k_proj.weight  [K*H, D]  -> layer_i/attn/k_proj/kernel [D, K, H]
  layers.i.self_attn.{q,k,v}_proj.bias [.*H]  -> .../bias                 [N|K, H]
  layers.i.self_attn.o_proj.weight  [D, N*H]  -> layer_i/attn/o_proj/kernel [N, H, D]
  layers.i.mlp.{gate,up}_proj.weight [F, D]   -> layer_i/mlp/..._proj/kernel [D, F]
  layers.i.mlp.down_proj.weight     [D, F]    -> layer_i/mlp/down_proj/kernel [F, D]
  layers.i.{input,post_attention}_layernorm.weight [D] -> input_norm|post_attn_norm/scale
  model.norm.weight                 [D]       -> final_norm/scale
  lm_head.weight                    [V, D]    -> lm_head/kernel           [D, V] (untied)

The value head is not part of an HF checkpoint; it is created fresh (see
:func:`load_hf_checkpoint`).

Not supported (refused by :func:`config_from_hf`), and the model change each
needs:

* Rope scalings other than ``"llama3"`` (``rope_scaling`` /
  ``rope_parameters.rope_type``): ``"linear"`` (positions divided by
  ``factor``), ``"dynamic"`` (NTK, theta grows with the sequence length),
  ``"yarn"`` and ``"longrope"`` (per-band frequencies and an attention
  scale). Each needs a case in ``alphallm.model.rope_inv_freq`` (and for
  yarn/longrope a scale on cos/sin in ``apply_rope``). ``"llama3"`` maps to
  ``TransformerConfig.rope_scaling="llama3"`` and its four ``rope_*`` fields.
* Gemma (all versions): RMSNorm scaling by ``(1 + w)``, embeddings multiplied
  by ``sqrt(hidden_size)``, GeGLU MLP (tanh-GELU); Gemma-2/3 add logit
  soft-capping, post-attention/post-MLP norms and sliding-window layers.
  Needs config switches for each in ``RMSNorm``, ``Transformer`` and ``MLP``.

Streaming and peak memory: every tensor's name, dtype and shape is checked
against the config before any data is read (a wrong checkpoint fails in
seconds, naming the file and tensor). Then tensors are read one at a time
with ``safetensors.safe_open(framework="numpy")`` (bf16 is read as
``ml_dtypes.bfloat16``: no torch), transposed to our layout and converted to
the target dtype in one copy (none when neither is needed), placed on device
(optionally sharded; each device receives only its slice via
``jax.make_array_from_callback``) and the transfer awaited before the next
tensor is read. Host memory beyond the placed parameters therefore peaks at
the raw tensor plus its converted copy of the largest tensor: for Llama-3-70B
(untied ``lm_head`` ``[128256, 8192]`` in bf16) ~4.2 GB loading as bf16,
~6.3 GB as float32; never a second copy of the model. (Measured on CPU for a
126M-parameter bf16 checkpoint: peak RSS = loaded params + at most 1.4x the
largest converted tensor.) The OS may keep the safetensors files in its
page cache; that memory is reclaimable. On the CPU backend the placed
parameters themselves live in host memory, of course.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers "bfloat16" with numpy for safetensors)
import numpy as np

from alphallm import hf_families, io_utils
from alphallm.hf_families import UnsupportedHFConfigError  # noqa: F401  (re-exported)
from alphallm.model import TransformerConfig

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Safetensors dtypes we convert; quantised or integer weights are refused.
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")

# Buffers some older checkpoints carry that hold no learned weights.
_IGNORED = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")


class HFCheckpointError(ValueError):
  """The safetensors files do not match config.json (missing, unexpected, shape)."""


# ----------------------------------------------------------------------------
# config.json -> TransformerConfig
# ----------------------------------------------------------------------------


def read_hf_config(path: str) -> dict[str, Any]:
  """The parsed ``config.json`` of the checkpoint directory ``path``."""
  file = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{path!r} has no {CONFIG_FILE}: not an HF checkpoint directory")
  cfg = io_utils.read_json(file)
  if not isinstance(cfg, dict):
    raise UnsupportedHFConfigError(f"{file}: expected a JSON object, got {type(cfg).__name__}")
  return cfg


def _require(hf: Mapping[str, Any], key: str) -> Any:
  if hf.get(key) is None:
    raise UnsupportedHFConfigError(f"the required key {key!r} is missing")
  return hf[key]


def config_from_hf(hf_config: Mapping[str, Any], dtype: str = "float32",
                   param_dtype: str | None = None, *, source: str = CONFIG_FILE
                   ) -> TransformerConfig:
  """Maps an HF ``config.json`` dict to our :class:`TransformerConfig`.

  Args:
    hf_config: the parsed ``config.json`` (legacy or transformers>=5 format).
    dtype: compute dtype of the imported model, e.g. ``"bfloat16"``.
    param_dtype: parameter dtype; defaults to ``dtype``.
    source: the file ``hf_config`` came from, named first in every error.

  Returns:
    The config. ``max_len`` is ``max_position_embeddings``.

  Raises:
    UnsupportedHFConfigError: ``"<source>: config key ..."``, one line naming
      the key of an unsupported model type or feature (rope scaling other than
      llama3, Gemma, sliding windows, o_proj/MLP biases, ...).
  """
  try:
    return _config_from_hf(dict(hf_config), dtype, param_dtype)
  except (TypeError, ValueError) as e:  # also TransformerConfig's checks, int("x")
    raise UnsupportedHFConfigError(f"{source}: {e}") from None


def load_hf_config(path: str, dtype: str = "float32", param_dtype: str | None = None
                   ) -> TransformerConfig:
  """:func:`config_from_hf` of the ``config.json`` in directory ``path`` (errors name it)."""
  return config_from_hf(read_hf_config(path), dtype, param_dtype,
                        source=os.path.join(path, CONFIG_FILE))


def _config_from_hf(hf: dict[str, Any], dtype: str, param_dtype: str | None
                    ) -> TransformerConfig:
  """:func:`config_from_hf` without the file name in its errors."""
  model_type = hf.get("model_type")
  if model_type is not None and str(model_type).startswith("gemma"):
    raise UnsupportedHFConfigError(
        f"config key 'model_type' = {model_type!r}: {hf_families.GEMMA_REASON}")
  if model_type not in hf_families.SUPPORTED_MODEL_TYPES:
    raise UnsupportedHFConfigError(
        f"config key 'model_type' = {model_type!r} is not supported; supported: "
        f"{list(hf_families.SUPPORTED_MODEL_TYPES)}")
  defaults = hf_families.FAMILY_DEFAULTS[model_type]
  hf_families.check_family_features(hf, model_type)
  rope_theta = hf_families.rope_theta(hf, defaults)
  rope_scaling = hf_families.rope_scaling_fields(hf)

  hidden = int(_require(hf, "hidden_size"))
  heads = int(_require(hf, "num_attention_heads"))
  kv_heads = hf.get("num_key_value_heads") or heads
  if heads % int(kv_heads):
    raise UnsupportedHFConfigError(
        f"config key 'num_key_value_heads' = {kv_heads!r} does not divide "
        f"num_attention_heads={heads}")
  head_dim = hf.get("head_dim")
  if head_dim is None:
    if hidden % heads:
      raise UnsupportedHFConfigError(
          f"no key 'head_dim', and hidden_size={hidden} is not a multiple of "
          f"num_attention_heads={heads}")
    head_dim = hidden // heads

  def get(key):
    value = hf.get(key)
    return defaults[key] if value is None else value

  return TransformerConfig(
      vocab_size=int(_require(hf, "vocab_size")),
      num_layers=int(_require(hf, "num_hidden_layers")),
      embed_dim=hidden,
      num_heads=heads,
      num_kv_heads=int(kv_heads),
      head_dim=int(head_dim),
      mlp_dim=int(_require(hf, "intermediate_size")),
      max_len=int(get("max_position_embeddings")),
      rope_theta=rope_theta,
      **rope_scaling,
      norm_eps=float(get("rms_norm_eps")),
      tie_embeddings=bool(get("tie_word_embeddings")),
      qkv_bias=model_type == "qwen2",
      dtype=str(jnp.dtype(dtype)),
      param_dtype=str(jnp.dtype(param_dtype or dtype)),
  )


# ----------------------------------------------------------------------------
# Tensor plan: HF name -> (our path, expected HF shape, layout transform)
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Target:
  path: tuple[str, ...]                   # where the tensor goes in our param tree
  hf_shape: tuple[int, ...]               # shape expected in the checkpoint
  transform: Callable[[np.ndarray], np.ndarray]  # HF layout -> our layout (views)


def _same(x: np.ndarray) -> np.ndarray:
  return x


def _transpose(x: np.ndarray) -> np.ndarray:
  """``[out, in]`` -> ``[in, out]``."""
  return x.T


def _to_heads(heads: int, head_dim: int) -> Callable[[np.ndarray], np.ndarray]:
  """``[N*H, D]`` -> ``[D, N, H]`` (q/k/v kernels)."""
  return lambda x: x.T.reshape(x.shape[1], heads, head_dim)


def _bias_to_heads(heads: int, head_dim: int) -> Callable[[np.ndarray], np.ndarray]:
  """``[N*H]`` -> ``[N, H]`` (q/k/v biases)."""
  return lambda x: x.reshape(heads, head_dim)


def _from_heads(heads: int, head_dim: int) -> Callable[[np.ndarray], np.ndarray]:
  """``[D, N*H]`` -> ``[N, H, D]`` (o_proj kernel)."""
  return lambda x: x.T.reshape(heads, head_dim, x.shape[0])


def tensor_plan(config: TransformerConfig) -> dict[str, _Target]:
  """Every HF tensor ``config`` needs, with its destination and expected shape."""
  d, n, k, h, f, v = (config.embed_dim, config.num_heads, config.num_kv_heads,
                      config.head_dim, config.mlp_dim, config.vocab_size)
  plan = {
      "model.embed_tokens.weight": _Target(("embed", "embedding"), (v, d), _same),
      "model.norm.weight": _Target(("final_norm", "scale"), (d,), _same),
  }
  if not config.tie_embeddings:
    plan["lm_head.weight"] = _Target(("lm_head", "kernel"), (v, d), _transpose)
  for i in range(config.num_layers):
    pre, ours = f"model.layers.{i}.", f"layer_{i}"
    for name, heads in (("q_proj", n), ("k_proj", k), ("v_proj", k)):
      plan[f"{pre}self_attn.{name}.weight"] = _Target(
          (ours, "attn", name, "kernel"), (heads * h, d), _to_heads(heads, h))
      if config.qkv_bias:
        plan[f"{pre}self_attn.{name}.bias"] = _Target(
            (ours, "attn", name, "bias"), (heads * h,), _bias_to_heads(heads, h))
    plan[f"{pre}self_attn.o_proj.weight"] = _Target(
        (ours, "attn", "o_proj", "kernel"), (d, n * h), _from_heads(n, h))
    for name in ("gate_proj", "up_proj"):
      plan[f"{pre}mlp.{name}.weight"] = _Target((ours, "mlp", name, "kernel"), (f, d), _transpose)
    plan[f"{pre}mlp.down_proj.weight"] = _Target(
        (ours, "mlp", "down_proj", "kernel"), (d, f), _transpose)
    plan[f"{pre}input_layernorm.weight"] = _Target((ours, "input_norm", "scale"), (d,), _same)
    plan[f"{pre}post_attention_layernorm.weight"] = _Target(
        (ours, "post_attn_norm", "scale"), (d,), _same)
  return plan


def _is_ignored(name: str, config: TransformerConfig) -> bool:
  """Tensors a checkpoint may hold that carry nothing we need.

  ``rotary_emb.inv_freq`` buffers (older Llama checkpoints), and a copy of
  the embedding saved as ``lm_head.weight`` by a tied model (HF ties it to
  the embedding on load too, so ignoring it matches HF).
  """
  return bool(_IGNORED.match(name)) or (config.tie_embeddings and name == "lm_head.weight")


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------


def checkpoint_files(path: str) -> list[str]:
  """The safetensors files of the checkpoint directory ``path``, in read order.

  ``model.safetensors.index.json`` (sharded) wins over ``model.safetensors``;
  failing both, a directory with exactly one ``*.safetensors`` file is used.
  """
  index = os.path.join(path, INDEX_FILE)
  if os.path.isfile(index):
    weight_map = io_utils.read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
      raise HFCheckpointError(f"{index}: no 'weight_map' object")
    files = sorted(set(weight_map.values()))
    missing = [f for f in files if not os.path.isfile(os.path.join(path, f))]
    if missing:
      raise HFCheckpointError(f"{index} names shard files that do not exist: {missing}")
    return [os.path.join(path, f) for f in files]
  single = os.path.join(path, SINGLE_FILE)
  if os.path.isfile(single):
    return [single]
  found = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  if len(found) == 1:
    return [os.path.join(path, found[0])]
  others = sorted(f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth", ".gguf")))
  raise HFCheckpointError(
      f"{path!r} has no {SINGLE_FILE} or {INDEX_FILE}"
      + (f" and {len(found)} other *.safetensors files {found}" if found else "")
      + (f"; found {others}: only safetensors is supported (re-save with "
         "save_pretrained, which writes safetensors)" if others else ""))


def _safe_open(file: str):
  safetensors = hf_families.import_hf_extra("safetensors", f"reading {file}")
  return safetensors.safe_open(file, framework="numpy")


def _index_tensors(files: list[str]) -> dict[str, tuple[str, str, tuple[int, ...]]]:
  """``{tensor name: (file, safetensors dtype, shape)}``, reading headers only."""
  out = {}
  for file in files:
    with _safe_open(file) as f:
      for name in f.keys():
        if name in out:
          raise HFCheckpointError(f"tensor {name!r} is in both {out[name][0]} and {file}")
        sl = f.get_slice(name)
        out[name] = (file, sl.get_dtype(), tuple(sl.get_shape()))
  return out


def _validate(path: str, tensors: Mapping[str, tuple[str, str, tuple[int, ...]]],
              plan: Mapping[str, _Target], config: TransformerConfig) -> None:
  """Raises naming file and tensor for a missing/unexpected/mis-shaped/non-float one."""
  missing = sorted(set(plan) - set(tensors))
  if missing:
    raise HFCheckpointError(
        f"checkpoint {path!r} lacks {len(missing)} tensor(s) that config.json implies "
        f"(num_layers={config.num_layers}, tie_embeddings={config.tie_embeddings}, "
        f"qkv_bias={config.qkv_bias}): {missing[:8]}{' ...' if len(missing) > 8 else ''}")
  for name, (file, dtype, shape) in tensors.items():
    if name not in plan:
      if _is_ignored(name, config):
        continue
      raise HFCheckpointError(
          f"{file}: unexpected tensor {name!r} (shape {list(shape)}) that "
          "alphallm.model has no parameter for")
    expected = plan[name].hf_shape
    if shape != expected:
      raise HFCheckpointError(
          f"{file}: tensor {name!r} has shape {list(shape)}, config.json implies "
          f"{list(expected)}")
    if dtype not in _FLOAT_DTYPES:
      raise HFCheckpointError(
          f"{file}: tensor {name!r} has dtype {dtype}; only {list(_FLOAT_DTYPES)} are "
          "supported")


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------

ShardingSpec = (jax.sharding.Sharding | Mapping[str, Any]
                | Callable[[tuple[str, ...], tuple[int, ...]], Any] | None)


def _sharding_for(sharding: ShardingSpec, path: tuple[str, ...],
                  shape: tuple[int, ...]) -> jax.sharding.Sharding | None:
  """One parameter's sharding from a single sharding, a pytree of them or a function."""
  if sharding is None or isinstance(sharding, jax.sharding.Sharding):
    return sharding
  if isinstance(sharding, Mapping):
    node = sharding
    for key in path:
      if not isinstance(node, Mapping) or key not in node:
        return None
      node = node[key]
    return node
  return sharding(path, shape)


def _place(x: np.ndarray, sharding: jax.sharding.Sharding | None) -> jax.Array:
  """Host array -> device array; with a sharding each device gets only its slice.

  Waits for the transfer, so that the host copy can be freed before the next
  tensor is read (transfers are asynchronous otherwise and would pile up).
  """
  if sharding is None:
    out = jax.device_put(x)
  else:
    out = jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.block_until_ready(out)


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _stream(tensors: Mapping[str, tuple[str, str, tuple[int, ...]]],
            plan: Mapping[str, _Target]) -> Iterator[tuple[str, np.ndarray]]:
  """Yields ``(name, raw HF tensor)`` one at a time, opening each file once."""
  by_file: dict[str, list[str]] = {}
  for name, (file, _, _) in tensors.items():
    if name in plan:
      by_file.setdefault(file, []).append(name)
  for file in sorted(by_file):
    with _safe_open(file) as f:
      for name in sorted(by_file[file]):
        yield name, f.get_tensor(name)


def value_head_params(config: TransformerConfig, seed: int = 0,
                      scale: float = 0.0) -> dict[str, np.ndarray]:
  """A fresh value head: kernel ``[D, 1]`` ~ ``scale * N(0, 1)``, bias ``[1]`` zero.

  ``scale=0`` (the default) gives the zero kernel ``model.init`` uses: the
  critic starts at value 0 everywhere and its gradient (w.r.t. the kernel,
  the final hidden state) is non-zero, so it trains from there.
  """
  dt = jnp.dtype(config.param_dtype)
  kernel = scale * np.random.default_rng(seed).standard_normal((config.embed_dim, 1))
  return {"kernel": kernel.astype(dt), "bias": np.zeros((1,), dt)}


def _truncate_vocab(plan: Mapping[str, _Target], vocab_size: int) -> dict[str, _Target]:
  """The plan with ``embed_tokens`` / ``lm_head`` cut to their first ``vocab_size`` rows."""
  out = dict(plan)
  for name in ("model.embed_tokens.weight", "lm_head.weight"):
    if name in out:
      t = out[name]
      out[name] = dataclasses.replace(
          t, transform=lambda x, f=t.transform: f(x[:vocab_size]))  # HF layout [V, D]
  return out


def load_hf_checkpoint(path: str, dtype: str = "float32", *, param_dtype: str | None = None,
                       sharding: ShardingSpec = None, value_head_seed: int = 0,
                       value_head_scale: float = 0.0, vocab_size: int | None = None
                       ) -> tuple[TransformerConfig, dict]:
  """Loads a local HF Llama/Qwen2 checkpoint as ``(config, params)``.

  Args:
    path: directory with ``config.json`` and safetensors weights.
    dtype: compute dtype of the returned config (``"float32"``, ``"bfloat16"``).
    param_dtype: dtype the weights are converted to; defaults to ``dtype``.
    sharding: where to place the parameters: None (default device), one
      ``jax.sharding.Sharding`` for all, a nested dict shaped like the params
      (missing entries: default device), or a function
      ``(path: tuple[str, ...], shape) -> Sharding | None``.
    value_head_seed: seed of the fresh value head (used when
      ``value_head_scale > 0``).
    value_head_scale: std of the fresh value-head kernel; 0 (default) gives
      the zero kernel of ``model.init``. See :func:`value_head_params`.
    vocab_size: keep only the first ``vocab_size`` rows of the embedding and
      ``lm_head`` (default: all). A checkpoint's vocabulary is often padded
      beyond its tokenizer's (e.g. Qwen2.5: 151936 rows, 151665 tokens): the
      padding ids are never inputs, and cutting their ``lm_head`` rows
      restricts the policy to real tokens (the softmax over the rest is
      unchanged), so decoding never meets an id the tokenizer cannot decode.

  Returns:
    ``(config, params)`` with ``params`` the Linen tree of
    ``alphallm.model.Transformer(config)`` (``{"embed": ..., "layer_0": ...}``).

  Raises:
    UnsupportedHFConfigError: config.json needs something the model lacks.
    HFCheckpointError: naming the file and tensor that is missing, unexpected,
      mis-shaped or not a float tensor. Raised before any weight is read.
  """
  config = load_hf_config(path, dtype=dtype, param_dtype=param_dtype)
  plan = tensor_plan(config)
  tensors = _index_tensors(checkpoint_files(path))
  _validate(path, tensors, plan, config)
  if vocab_size is not None and vocab_size != config.vocab_size:
    if not 0 < vocab_size < config.vocab_size:
      raise HFCheckpointError(
          f"{os.path.join(path, CONFIG_FILE)}: cannot keep {vocab_size} vocabulary rows of "
          f"vocab_size={config.vocab_size}")
    plan = _truncate_vocab(plan, vocab_size)
    config = dataclasses.replace(config, vocab_size=vocab_size)

  target = jnp.dtype(config.param_dtype)
  params: dict = {}
  for name, raw in _stream(tensors, plan):
    spec = plan[name]
    host = np.ascontiguousarray(spec.transform(raw), dtype=target)  # the one copy
    del raw
    _set(params, spec.path, _place(host, _sharding_for(sharding, spec.path, host.shape)))
    del host
  for key, value in value_head_params(config, value_head_seed, value_head_scale).items():
    path_ = ("value_head", key)
    _set(params, path_, _place(value, _sharding_for(sharding, path_, value.shape)))
  return config, params
