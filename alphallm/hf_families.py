"""What each supported HF model family's config.json means for alphallm.model.

Family defaults for omitted keys, the features a family may switch on that
:class:`~alphallm.model.Transformer` cannot compute (refused by
:func:`check_family_features`), and RoPE: ``rope_theta`` and the rope
scaling (:func:`rope_scaling_fields`; ``"llama3"`` is supported, see
:func:`alphallm.model.llama3_inv_freq`). Errors are
:class:`UnsupportedHFConfigError` naming the config key;
:func:`alphallm.hf_import.config_from_hf` prefixes the file.

Also :func:`import_hf_extra`: the optional packages of the ``hf`` extra
(safetensors, tokenizers, sentencepiece), imported only when used, with a
one-line error naming the extra when one is missing.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Mapping
from typing import Any

HF_EXTRA_INSTALL = 'pip install -e ".[hf]"'


def import_hf_extra(module: str, purpose: str) -> types.ModuleType:
  """``importlib.import_module(module)``, or one line saying how to install it.

  Args:
    module: e.g. ``"safetensors"``, ``"tokenizers"``, ``"sentencepiece"``.
    purpose: what needs it, for the message (e.g. ``"reading model.safetensors"``).

  Raises:
    ImportError: ``"<purpose> needs the optional package '<top>' (not installed):
      pip install -e ".[hf]""``.
  """
  try:
    return importlib.import_module(module)
  except ImportError:
    top = module.split(".")[0]
    raise ImportError(f"{purpose} needs the optional package {top!r} (not installed): "
                      f"{HF_EXTRA_INSTALL}") from None


class UnsupportedHFConfigError(ValueError):
  """config.json asks for something alphallm.model cannot represent."""


SUPPORTED_MODEL_TYPES = ("llama", "qwen2")

# HF defaults for keys a config.json may omit (LlamaConfig / Qwen2Config).
FAMILY_DEFAULTS = {
    "llama": {"max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
              "rope_theta": 10_000.0, "tie_word_embeddings": False},
    "qwen2": {"max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
              "rope_theta": 10_000.0, "tie_word_embeddings": False},
}

GEMMA_REASON = (
    "Gemma does not fit alphallm.model.Transformer: it needs (1) RMSNorm with a "
    "(1 + w) scale, (2) embeddings multiplied by sqrt(hidden_size), (3) a GeGLU MLP "
    "(gelu_pytorch_tanh instead of SiLU); Gemma-2/3 also need logit soft-capping, "
    "sandwich (pre+post) norms and alternating sliding-window attention (Gemma-3 also "
    "q/k norms). model.py would need config fields for these (e.g. norm_scale_offset, "
    "embed_scale, mlp_activation) before they can be imported")


# llama3 rope scaling: config.json key -> TransformerConfig field.
_LLAMA3_KEYS = {"factor": "rope_scaling_factor", "low_freq_factor": "rope_low_freq_factor",
                "high_freq_factor": "rope_high_freq_factor",
                "original_max_position_embeddings": "rope_original_max_len"}
SUPPORTED_ROPE_TYPES = ("default", "llama3")


def rope_spec(hf: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
  """``(config key, spec)`` of the rope scaling, or ``(None, {})`` when there is none.

  The legacy ``rope_scaling`` dict or transformers>=5 ``rope_parameters``; a
  config with both must not disagree on the type.
  """
  params = hf.get("rope_parameters") or {}
  if not isinstance(params, Mapping) or any(isinstance(v, Mapping) for v in params.values()):
    raise UnsupportedHFConfigError(
        f"config key 'rope_parameters' = {params!r}: only a single (not per-layer-type) "
        "rope parameter set is supported")
  found = []
  for key, spec in (("rope_scaling", hf.get("rope_scaling")), ("rope_parameters", params)):
    if not spec:
      continue
    if not isinstance(spec, Mapping):
      raise UnsupportedHFConfigError(f"config key '{key}' = {spec!r}: expected an object")
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind not in SUPPORTED_ROPE_TYPES:
      raise UnsupportedHFConfigError(
          f"config key '{key}' has rope_type={kind!r}: rope scaling {kind!r} is not supported "
          f"(supported: {list(SUPPORTED_ROPE_TYPES)}; see 'Not supported' in the "
          f"alphallm.hf_import docstring). Spec: {dict(spec)!r}")
    if kind != "default":
      found.append((key, kind, spec))
  if len({kind for _, kind, _ in found}) > 1:
    raise UnsupportedHFConfigError(
        f"config keys 'rope_scaling' and 'rope_parameters' disagree: {found[0][1]!r} vs "
        f"{found[1][1]!r}")
  return (found[-1][0], found[-1][2]) if found else (None, {})


def rope_scaling_fields(hf: Mapping[str, Any]) -> dict[str, Any]:
  """The ``TransformerConfig`` rope-scaling fields config.json asks for ({} for none)."""
  key, spec = rope_spec(hf)
  if key is None:
    return {}
  out: dict[str, Any] = {"rope_scaling": "llama3"}
  for hf_key, field in _LLAMA3_KEYS.items():
    value = spec.get(hf_key)
    if hf_key == "original_max_position_embeddings" and value is None:
      value = hf.get("max_position_embeddings")  # transformers' fallback
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
      raise UnsupportedHFConfigError(
          f"config key '{key}.{hf_key}' = {value!r}: llama3 rope scaling needs a positive "
          "number")
    if field == "rope_original_max_len" and value != int(value):
      raise UnsupportedHFConfigError(
          f"config key '{key}.{hf_key}' = {value!r}: must be an integer")
    out[field] = int(value) if field == "rope_original_max_len" else float(value)
  if not out["rope_high_freq_factor"] > out["rope_low_freq_factor"]:
    raise UnsupportedHFConfigError(
        f"config key '{key}': high_freq_factor={out['rope_high_freq_factor']} must exceed "
        f"low_freq_factor={out['rope_low_freq_factor']}")
  return out


def rope_theta(hf: Mapping[str, Any], defaults: Mapping[str, Any]) -> float:
  """rope_theta from the legacy top-level key or transformers>=5 ``rope_parameters``."""
  params = hf.get("rope_parameters") or {}
  for source in (hf, params):
    factor = source.get("partial_rotary_factor")
    if factor not in (None, 1, 1.0):
      raise UnsupportedHFConfigError(
          f"config key 'partial_rotary_factor' = {factor!r}: only full-width RoPE is supported")
  for theta in (hf.get("rope_theta"), params.get("rope_theta"), defaults["rope_theta"]):
    if theta is not None:
      return float(theta)
  raise AssertionError("unreachable: the family default is set")


def check_family_features(hf: Mapping[str, Any], model_type: str) -> None:
  """Raises for config options our Transformer has no parameters/compute for."""
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise UnsupportedHFConfigError(
        f"config key 'hidden_act' = {act!r}: only 'silu' (SwiGLU MLP) is supported")
  if hf.get("quantization_config"):
    raise UnsupportedHFConfigError(
        "config key 'quantization_config' is set: quantised checkpoints are not supported; "
        "import the unquantised (bf16/f16/f32) weights")
  if hf.get("mlp_bias"):
    raise UnsupportedHFConfigError("config key 'mlp_bias' = true: MLP biases are not supported")
  if model_type == "llama" and hf.get("attention_bias"):
    raise UnsupportedHFConfigError(
        "config key 'attention_bias' = true: Llama's attention_bias also puts a bias on "
        "o_proj, which alphallm.model has no parameter for")
  if model_type == "qwen2":
    if hf.get("use_sliding_window"):
      raise UnsupportedHFConfigError(
          "config key 'use_sliding_window' = true: sliding-window attention is not supported")
  layer_types = hf.get("layer_types")
  if layer_types and any(t != "full_attention" for t in layer_types):
    raise UnsupportedHFConfigError(
        f"config key 'layer_types' = {layer_types!r}: only 'full_attention' layers are "
        "supported")
