"""Importing HF Llama/Qwen2 checkpoints: config mapping, errors, and parity.

Parity tests build tiny random models with ``transformers`` on the PyTorch
CPU build, save them locally (nothing is downloaded) and compare float32
logits and greedy generations with ours. They skip when torch or
transformers are not installed; the config and error tests need only
``safetensors``.
"""

import copy
import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alphallm import hf_import, model as model_lib, sampling

# ------------------------------------------------------------------ config.json

LLAMA2_7B = {  # legacy (transformers 4.x) format, as on the hub
    "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "tie_word_embeddings": False, "torch_dtype": "float16", "use_cache": True,
    "vocab_size": 32000}
LLAMA3_8B = dict(LLAMA2_7B, intermediate_size=14336, max_position_embeddings=8192,
                 num_key_value_heads=8, rope_theta=500000.0, vocab_size=128256,
                 torch_dtype="bfloat16")
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
    "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 24,
    "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "use_cache": True, "use_sliding_window": False, "vocab_size": 151936}
LLAMA32_1B = dict(  # the hub's config.json of meta-llama/Llama-3.2-1B (legacy format)
    LLAMA3_8B, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
    num_attention_heads=32, num_key_value_heads=8, head_dim=64,
    max_position_embeddings=131072, tie_word_embeddings=True, bos_token_id=128000,
    eos_token_id=128001, rope_scaling={
        "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192, "rope_type": "llama3"})
QWEN25_15B_INSTRUCT = dict(  # Qwen/Qwen2.5-1.5B-Instruct's config.json
    QWEN25_05B, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
    num_attention_heads=12, num_key_value_heads=2, max_window_layers=21,
    eos_token_id=151645)


def test_config_llama2_legacy_format():
  cfg = hf_import.config_from_hf(LLAMA2_7B)
  assert cfg == model_lib.TransformerConfig(
      vocab_size=32000, num_layers=32, embed_dim=4096, num_heads=32, num_kv_heads=32,
      head_dim=128, mlp_dim=11008, max_len=4096, rope_theta=10000.0, norm_eps=1e-5,
      tie_embeddings=False, qkv_bias=False, dtype="float32", param_dtype="float32")
  assert cfg.num_params(include_value_head=False) == 6_738_415_616  # Llama-2-7B


def test_config_llama3_and_dtypes():
  cfg = hf_import.config_from_hf(LLAMA3_8B, dtype="bfloat16")
  assert (cfg.num_kv_heads, cfg.rope_theta, cfg.vocab_size) == (8, 500000.0, 128256)
  assert (cfg.dtype, cfg.param_dtype) == ("bfloat16", "bfloat16")
  cfg = hf_import.config_from_hf(LLAMA3_8B, dtype="bfloat16", param_dtype="float32")
  assert (cfg.dtype, cfg.param_dtype) == ("bfloat16", "float32")
  assert cfg.num_params(include_value_head=False) == 8_030_261_248  # Llama-3-8B


def test_config_qwen25():
  cfg = hf_import.config_from_hf(QWEN25_05B)
  assert cfg.qkv_bias and cfg.tie_embeddings
  assert (cfg.head_dim, cfg.num_kv_heads, cfg.rope_theta) == (64, 2, 1e6)
  assert cfg.num_params(include_value_head=False) == 494_032_768  # Qwen2.5-0.5B


def test_config_llama32_rope_scaling_and_tied():
  cfg = hf_import.config_from_hf(LLAMA32_1B)
  assert cfg.tie_embeddings and cfg.head_dim == 64
  assert (cfg.rope_scaling, cfg.rope_scaling_factor, cfg.rope_low_freq_factor,
          cfg.rope_high_freq_factor, cfg.rope_original_max_len) == ("llama3", 32.0, 1.0, 4.0, 8192)
  assert cfg.num_params(include_value_head=False) == 1_235_814_400  # Llama-3.2-1B
  # transformers>=5 writes the same spec under rope_parameters (with rope_theta).
  hf = {k: v for k, v in LLAMA32_1B.items() if k not in ("rope_scaling", "rope_theta")}
  hf["rope_parameters"] = dict(LLAMA32_1B["rope_scaling"], rope_theta=500000.0)
  assert hf_import.config_from_hf(hf) == cfg
  # No scaling: the default fields, which reproduce the plain frequencies.
  plain = hf_import.config_from_hf(LLAMA3_8B)
  assert plain.rope_scaling == "none" and plain.rope_scaling_factor == 1.0


def test_config_qwen25_15b_instruct():
  cfg = hf_import.config_from_hf(QWEN25_15B_INSTRUCT)
  assert cfg.qkv_bias and cfg.tie_embeddings and cfg.rope_scaling == "none"
  assert (cfg.num_heads // cfg.num_kv_heads, cfg.head_dim, cfg.rope_theta) == (6, 128, 1e6)
  # Published as 1.54B parameters (1.31B without the embedding).
  n = cfg.num_params(include_value_head=False)
  assert 1.53e9 < n < 1.55e9 and 1.30e9 < n - cfg.vocab_size * cfg.embed_dim < 1.32e9


def test_config_errors_name_the_file(tmp_path):
  with open(tmp_path / "config.json", "w") as f:
    json.dump(dict(LLAMA2_7B, rope_scaling={"rope_type": "dynamic", "factor": 2.0}), f)
  with pytest.raises(hf_import.UnsupportedHFConfigError) as e:
    hf_import.load_hf_config(str(tmp_path))
  message = str(e.value)
  assert message.startswith(str(tmp_path / "config.json") + ": config key 'rope_scaling'")
  assert "'dynamic'" in message and "\n" not in message
  with pytest.raises(hf_import.UnsupportedHFConfigError, match=r"^config\.json: .*'num_key"):
    hf_import.config_from_hf(dict(LLAMA2_7B, num_key_value_heads=5))  # 32 % 5 != 0


def test_config_transformers5_format():
  hf = {k: v for k, v in LLAMA3_8B.items() if k not in ("rope_theta", "rope_scaling")}
  hf["rope_parameters"] = {"rope_theta": 500000.0, "rope_type": "default"}
  hf["head_dim"] = 64  # an explicit head_dim wins over hidden/heads
  cfg = hf_import.config_from_hf(hf)
  assert (cfg.rope_theta, cfg.head_dim) == (500000.0, 64)
  assert hf_import.config_from_hf(dict(LLAMA2_7B, rope_theta=None)).rope_theta == 10000.0


@pytest.mark.parametrize("hf, match", [
    (dict(LLAMA3_8B, rope_scaling={"factor": 8.0, "rope_type": "dynamic"}),
     r"'rope_scaling' has rope_type='dynamic'.*supported: \['default', 'llama3'\]"),
    (dict(LLAMA32_1B, rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                    "high_freq_factor": 4.0}),
     r"'rope_scaling\.low_freq_factor' = None"),
    (dict(LLAMA32_1B, rope_scaling=dict(LLAMA32_1B["rope_scaling"], high_freq_factor=1.0)),
     r"high_freq_factor=1\.0 must exceed low_freq_factor=1\.0"),
    (dict(LLAMA32_1B, rope_scaling=dict(LLAMA32_1B["rope_scaling"], factor="8")),
     r"'rope_scaling\.factor' = '8'"),
    (dict(LLAMA32_1B, rope_parameters={"rope_type": "yarn", "factor": 4.0}),
     r"'rope_parameters' has rope_type='yarn'"),
    (dict(QWEN25_05B, rope_parameters={"rope_theta": 1e6, "rope_type": "yarn", "factor": 4.0}),
     r"'rope_parameters' has rope_type='yarn'"),
    (dict(LLAMA2_7B, rope_scaling={"type": "linear", "factor": 2.0}),
     r"'rope_scaling' has rope_type='linear'"),
    (dict(LLAMA2_7B, model_type="gemma", hidden_act="gelu_pytorch_tanh"),
     r"'model_type' = 'gemma'.*\(1 \+ w\).*sqrt\(hidden_size\).*GeGLU"),
    (dict(LLAMA2_7B, model_type="gemma2"), r"Gemma does not fit"),
    (dict(LLAMA2_7B, model_type="mistral"), r"'model_type' = 'mistral' is not supported"),
    (dict(LLAMA2_7B, partial_rotary_factor=0.5), r"'partial_rotary_factor' = 0.5"),
    (dict(LLAMA2_7B, attention_bias=True), r"'attention_bias'.*o_proj"),
    (dict(LLAMA2_7B, mlp_bias=True), r"'mlp_bias'"),
    (dict(LLAMA2_7B, hidden_act="gelu"), r"'hidden_act' = 'gelu'"),
    (dict(LLAMA2_7B, quantization_config={"quant_method": "gptq"}), r"'quantization_config'"),
    (dict(QWEN25_05B, use_sliding_window=True), r"'use_sliding_window'"),
    (dict(QWEN25_05B, layer_types=["full_attention", "sliding_attention"]), r"'layer_types'"),
    ({k: v for k, v in LLAMA2_7B.items() if k != "hidden_size"},
     r"required key 'hidden_size' is missing"),
])
def test_config_refuses_unsupported(hf, match):
  with pytest.raises(hf_import.UnsupportedHFConfigError, match=match):
    hf_import.config_from_hf(hf)


# ------------------------------------------------------------------ numpy-only checkpoints

TINY = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 40, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": False}


def _random_tensors(hf_config, seed=0):
  config = hf_import.config_from_hf(hf_config)
  rng = np.random.default_rng(seed)
  return {name: (0.2 * rng.standard_normal(t.hf_shape)).astype(np.float32)
          for name, t in hf_import.tensor_plan(config).items()}


def _write(directory, hf_config, tensors, num_shards=1):
  """config.json + one safetensors file, or ``num_shards`` shards and an index."""
  safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="needs safetensors")
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf_config, f)
  if num_shards == 1:
    safetensors_numpy.save_file(tensors, os.path.join(directory, "model.safetensors"))
    return str(directory)
  names = sorted(tensors)
  weight_map = {}
  for s in range(num_shards):
    file = f"model-{s + 1:05d}-of-{num_shards:05d}.safetensors"
    part = {n: tensors[n] for n in names[s::num_shards]}
    safetensors_numpy.save_file(part, os.path.join(directory, file))
    weight_map.update({n: file for n in part})
  with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
  return str(directory)


@functools.partial(jax.jit, static_argnums=0)
def _apply(config, params, tokens):
  return model_lib.Transformer(config).apply({"params": params}, tokens)


def _logits(config, params, tokens):
  return np.asarray(_apply(config, params, jnp.asarray(tokens)).logits)


TOKENS = np.random.default_rng(0).integers(0, 40, (2, 10))


def test_params_tree_matches_model_init(tmp_path):
  for tied in (False, True):
    hf = dict(TINY, tie_word_embeddings=tied)
    config, params = hf_import.load_hf_checkpoint(
        _write(tmp_path / str(tied), hf, _random_tensors(hf)))
    ref = jax.eval_shape(lambda: model_lib.init_params(config, jax.random.key(0)))
    assert jax.tree.structure(params) == jax.tree.structure(ref)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == jax.tree.map(
        lambda a: (a.shape, a.dtype), ref)
    np.testing.assert_array_equal(params["value_head"]["kernel"], 0.0)  # as model.init
    np.testing.assert_array_equal(params["value_head"]["bias"], 0.0)


def test_vocab_cut_to_the_tokenizer(tmp_path):
  path = _write(tmp_path, TINY, _random_tensors(TINY))
  config, full = hf_import.load_hf_checkpoint(path)
  keep = config.vocab_size - 5                       # e.g. a vocabulary padded beyond it
  cut_config, cut = hf_import.load_hf_checkpoint(path, vocab_size=keep)
  assert cut_config.vocab_size == keep
  np.testing.assert_array_equal(cut["embed"]["embedding"], full["embed"]["embedding"][:keep])
  np.testing.assert_array_equal(cut["lm_head"]["kernel"], full["lm_head"]["kernel"][:, :keep])
  # The real tokens' logits are unchanged: the softmax over them is the policy restricted.
  tokens = TOKENS % keep                              # inputs are real tokens only
  np.testing.assert_allclose(_logits(cut_config, cut, tokens),
                             _logits(config, full, tokens)[..., :keep], rtol=1e-6, atol=1e-6)
  with pytest.raises(hf_import.HFCheckpointError, match="cannot keep"):
    hf_import.load_hf_checkpoint(path, vocab_size=config.vocab_size + 1)


def test_sharded_files_equal_single_file(tmp_path):
  tensors = _random_tensors(TINY)
  _, one = hf_import.load_hf_checkpoint(_write(tmp_path / "one", TINY, tensors))
  config, three = hf_import.load_hf_checkpoint(_write(tmp_path / "three", TINY, tensors, 3))
  jax.tree.map(np.testing.assert_array_equal, one, three)
  assert np.isfinite(_logits(config, three, TOKENS)).all()


def test_missing_tensor_is_named(tmp_path):
  tensors = _random_tensors(TINY)
  del tensors["model.layers.1.mlp.up_proj.weight"]
  with pytest.raises(hf_import.HFCheckpointError,
                     match=r"lacks 1 tensor.*model\.layers\.1\.mlp\.up_proj\.weight"):
    hf_import.load_hf_checkpoint(_write(tmp_path, TINY, tensors))


def test_unexpected_tensor_names_file_and_tensor(tmp_path):
  tensors = _random_tensors(TINY)
  tensors["model.layers.0.self_attn.o_proj.bias"] = np.zeros(32, np.float32)
  with pytest.raises(hf_import.HFCheckpointError,
                     match=r"model-0000\d-of-00002\.safetensors: unexpected tensor "
                           r"'model\.layers\.0\.self_attn\.o_proj\.bias'"):
    hf_import.load_hf_checkpoint(_write(tmp_path, TINY, tensors, num_shards=2))


def test_misshaped_tensor_names_file_tensor_and_shapes(tmp_path):
  tensors = _random_tensors(TINY)
  tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((32, 32), np.float32)
  with pytest.raises(hf_import.HFCheckpointError,
                     match=r"model\.safetensors: tensor 'model\.layers\.0\.self_attn\.k_proj"
                           r"\.weight' has shape \[32, 32\], config\.json implies \[16, 32\]"):
    hf_import.load_hf_checkpoint(_write(tmp_path, TINY, tensors))


def test_integer_tensor_refused(tmp_path):
  tensors = _random_tensors(TINY)
  tensors["model.norm.weight"] = np.ones(32, np.int8)
  with pytest.raises(hf_import.HFCheckpointError, match=r"'model\.norm\.weight' has dtype I8"):
    hf_import.load_hf_checkpoint(_write(tmp_path, TINY, tensors))


def test_benign_extra_tensors_are_ignored(tmp_path):
  hf = dict(TINY, tie_word_embeddings=True)
  tensors = _random_tensors(hf)
  tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()  # tied copy
  config, params = hf_import.load_hf_checkpoint(_write(tmp_path, hf, tensors))
  assert config.tie_embeddings and "lm_head" not in params


def test_missing_weights_and_shards_are_explained(tmp_path):
  os.makedirs(tmp_path / "bin")
  with open(tmp_path / "bin" / "config.json", "w") as f:
    json.dump(TINY, f)
  (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(hf_import.HFCheckpointError, match=r"pytorch_model\.bin.*only safetensors"):
    hf_import.load_hf_checkpoint(str(tmp_path / "bin"))
  d = _write(tmp_path / "sharded", TINY, _random_tensors(TINY), num_shards=2)
  os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
  with pytest.raises(hf_import.HFCheckpointError, match=r"do not exist.*00002-of-00002"):
    hf_import.load_hf_checkpoint(d)
  with pytest.raises(FileNotFoundError, match="no config.json"):
    hf_import.load_hf_checkpoint(str(tmp_path))


def test_value_head_init(tmp_path):
  d = _write(tmp_path, TINY, _random_tensors(TINY))
  config, params = hf_import.load_hf_checkpoint(d, value_head_seed=3, value_head_scale=0.1)
  kernel = np.asarray(params["value_head"]["kernel"])
  assert kernel.shape == (32, 1) and 0.02 < kernel.std() < 0.3
  _, again = hf_import.load_hf_checkpoint(d, value_head_seed=3, value_head_scale=0.1)
  np.testing.assert_array_equal(kernel, again["value_head"]["kernel"])
  values = _apply(config, params, jnp.asarray(TOKENS)).values
  assert values.shape == TOKENS.shape and np.abs(np.asarray(values)).max() > 0


def test_placement_with_shardings(tmp_path):
  d = _write(tmp_path, TINY, _random_tensors(TINY))
  config, plain = hf_import.load_hf_checkpoint(d)
  mesh = Mesh(np.asarray(jax.devices()), ("model",))

  def by_last_axis(path, shape):
    if shape[-1] % jax.device_count():
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), "model"))

  _, sharded = hf_import.load_hf_checkpoint(d, sharding=by_last_axis)
  jax.tree.map(np.testing.assert_array_equal, plain, sharded)
  up = sharded["layer_0"]["mlp"]["up_proj"]["kernel"]  # [32, 48]: 48 % 8 == 0
  assert up.sharding == by_last_axis(None, up.shape)
  assert len(up.addressable_shards) == jax.device_count()
  np.testing.assert_allclose(_logits(config, sharded, TOKENS), _logits(config, plain, TOKENS),
                             atol=1e-5)
  replicated = NamedSharding(mesh, P())
  _, tree = hf_import.load_hf_checkpoint(d, sharding={"embed": {"embedding": replicated}})
  assert tree["embed"]["embedding"].sharding == replicated
  _, one = hf_import.load_hf_checkpoint(d, sharding=replicated)
  assert all(x.sharding == replicated for x in jax.tree.leaves(one))


# ------------------------------------------------------------------ parity with transformers

VOCAB = 128
COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=VOCAB,
              max_position_embeddings=64, rms_norm_eps=1e-5,
              initializer_range=0.2)  # wide enough logit gaps for a stable argmax


@pytest.fixture(scope="module")
def hf_libs():
  torch = pytest.importorskip("torch", reason="parity tests need torch (CPU build)")
  transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
  return torch, transformers


def _build(hf_libs, family):
  """A tiny random HF model with non-trivial norms/biases, in eval mode."""
  torch, tr = hf_libs
  torch.manual_seed(0)
  if family == "llama_gqa":
    model = tr.LlamaForCausalLM(tr.LlamaConfig(
        **COMMON, num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0))
  elif family == "llama_tied":  # multi-head, tied, head_dim != hidden / heads
    model = tr.LlamaForCausalLM(tr.LlamaConfig(
        **COMMON, num_attention_heads=4, num_key_value_heads=4, head_dim=24,
        tie_word_embeddings=True))
  elif family == "qwen2":
    model = tr.Qwen2ForCausalLM(tr.Qwen2Config(
        **COMMON, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
  elif family == "llama3_scaled":  # Llama-3.2-1B's features: llama3 rope scaling, tied, GQA 4:1
    model = tr.LlamaForCausalLM(tr.LlamaConfig(
        **COMMON, num_attention_heads=8, num_key_value_heads=2, head_dim=16,
        tie_word_embeddings=True, rope_parameters=dict(LLAMA3_SCALING, rope_theta=10000.0)))
  elif family == "qwen25":  # Qwen2.5-0.5B's features: GQA 7:1, tied, qkv bias, theta 1e6
    model = tr.Qwen2ForCausalLM(tr.Qwen2Config(
        **dict(COMMON, hidden_size=112), num_attention_heads=14, num_key_value_heads=2,
        tie_word_embeddings=True, rope_theta=1e6, use_sliding_window=False,
        sliding_window=32768, max_window_layers=1))
  else:
    raise ValueError(family)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name or "bias" in name:  # HF initialises these to ones / zeros
        p.add_(0.1 * torch.randn_like(p))
  return model.eval()


def _hf_logits(hf_libs, model, tokens):
  torch, _ = hf_libs
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.float().numpy()


def _hf_greedy(hf_libs, model, prompt, n):
  torch, _ = hf_libs
  ids = torch.tensor([prompt])
  with torch.no_grad():
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=n, eos_token_id=None, pad_token_id=0)
  return out[0, len(prompt):].numpy()


PARITY_TOKENS = np.random.default_rng(1).integers(0, VOCAB, (2, 16))
# original_max_position_embeddings 32, factor 4: wavelengths 2 pi 10000^(i/8), i < 8, fall
# in all three bands (i=0 kept, i=1 interpolated, i>=2 divided by 4), and 48 positions
# reach well past 32 / 4.
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
LONG_TOKENS = np.random.default_rng(2).integers(0, VOCAB, (2, 48))
PROMPTS = [[5, 17, 99, 3, 42], [7, 64, 101]]


@pytest.mark.parametrize("family, num_shards", [
    ("llama_gqa", "sharded"), ("llama_tied", "single"), ("qwen2", "sharded"),
    ("llama3_scaled", "single"), ("qwen25", "single")])
def test_parity_logits_and_greedy(hf_libs, tmp_path, family, num_shards):
  model = _build(hf_libs, family)
  model.save_pretrained(tmp_path, max_shard_size="40KB" if num_shards == "sharded" else "1GB")
  assert os.path.isfile(tmp_path / "model.safetensors.index.json") == (num_shards == "sharded")
  config, params = hf_import.load_hf_checkpoint(str(tmp_path))
  assert config.qkv_bias == family.startswith("qwen")
  assert config.tie_embeddings == (family != "llama_gqa")

  diff = np.abs(_logits(config, params, PARITY_TOKENS)
                - _hf_logits(hf_libs, model, PARITY_TOKENS)).max()
  assert diff <= 1e-4, f"{family}: max |logits - HF logits| = {diff}"

  # Greedy: HF per prompt, ours batched with left padding.
  n = 8
  ids, mask = np.zeros((2, 5), np.int32), np.zeros((2, 5), bool)
  for row, prompt in enumerate(PROMPTS):
    ids[row, 5 - len(prompt):], mask[row, 5 - len(prompt):] = prompt, True
  ours = sampling.generate(params, config, jnp.asarray(ids), jnp.asarray(mask),
                           jax.random.key(0), max_new_tokens=n, temperature=0.0)
  for row, prompt in enumerate(PROMPTS):
    np.testing.assert_array_equal(np.asarray(ours.tokens[row]),
                                  _hf_greedy(hf_libs, model, prompt, n),
                                  err_msg=f"{family}: greedy continuation of {prompt}")


def _relative_diff(ours, ref):
  return float(np.abs(ours - ref).max() / np.abs(ref).max())


def test_llama3_rope_scaling_parity_and_that_it_matters(hf_libs, tmp_path):
  """Logits at 48 positions match HF's to 1e-4 relative; ignoring the scaling does not."""
  model = _build(hf_libs, "llama3_scaled")
  model.save_pretrained(tmp_path)
  config, params = hf_import.load_hf_checkpoint(str(tmp_path))
  assert (config.rope_scaling, config.rope_scaling_factor, config.rope_original_max_len) == (
      "llama3", 4.0, 32)
  ref = _hf_logits(hf_libs, model, LONG_TOKENS)
  diff = _relative_diff(_logits(config, params, LONG_TOKENS), ref)
  assert diff <= 1e-4, f"llama3 rope scaling: relative max |logits - HF| = {diff}"
  unscaled = dataclasses.replace(config, rope_scaling="none")
  ignored = _relative_diff(_logits(unscaled, params, LONG_TOKENS), ref)
  assert ignored > 100 * max(diff, 1e-6), f"scaling ignored: only {ignored} off HF"
  # The inverse frequencies themselves, against HF's rotary buffer.
  hf_inv = model.model.rotary_emb.inv_freq.numpy()
  np.testing.assert_allclose(np.asarray(model_lib.rope_inv_freq(config)), hf_inv, rtol=1e-6)


def test_bf16_checkpoint(hf_libs, tmp_path):
  torch, _ = hf_libs
  model = _build(hf_libs, "llama_gqa")
  copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path)
  # The float32 reference with the same bf16-rounded weights (rotary buffers stay f32).
  model.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
  ref = _hf_logits(hf_libs, model, PARITY_TOKENS)

  config, params = hf_import.load_hf_checkpoint(str(tmp_path), dtype="float32")
  exact = np.abs(_logits(config, params, PARITY_TOKENS) - ref).max()
  assert exact <= 1e-4, f"bf16 weights loaded as float32: max diff {exact}"

  config, params = hf_import.load_hf_checkpoint(str(tmp_path), dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  loose = np.abs(_logits(config, params, PARITY_TOKENS) - ref).max()
  assert loose <= 0.05 * np.abs(ref).max() + 0.1, f"bf16 compute: max diff {loose}"


def test_missing_safetensors_names_the_extra(tmp_path, monkeypatch):
  d = _write(tmp_path, TINY, _random_tensors(TINY))
  monkeypatch.setitem(__import__("sys").modules, "safetensors", None)  # import now fails
  with pytest.raises(ImportError, match=r"model\.safetensors needs the optional package "
                                        r"'safetensors' \(not installed\): pip install -e "
                                        r'"\.\[hf\]"$'):
    hf_import.load_hf_checkpoint(d)
