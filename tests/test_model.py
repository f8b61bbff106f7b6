import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphallm import model as model_lib
from alphallm import testing


@pytest.fixture(scope="module")
def setup():
  cfg = testing.tiny_config(vocab_size=40)
  return cfg, testing.random_params(cfg)


def test_shapes(setup):
  cfg, params = setup
  tokens = jnp.ones((3, 7), jnp.int32)
  out = model_lib.Transformer(cfg).apply({"params": params}, tokens)
  assert out.logits.shape == (3, 7, 40) and out.logits.dtype == jnp.float32
  assert out.values.shape == (3, 7)
  assert out.cache is None


def test_num_params_matches_init():
  for tie, bias in [(True, False), (False, True)]:
    cfg = testing.tiny_config(vocab_size=40, tie_embeddings=tie, qkv_bias=bias)
    params = model_lib.init_params(cfg, jax.random.key(0))
    n = sum(x.size for x in jax.tree.leaves(params))
    assert n == cfg.num_params()


def test_kv_cache_incremental_equals_full_forward(setup):
  cfg, params = setup
  model = model_lib.Transformer(cfg)
  tokens = jax.random.randint(jax.random.key(3), (2, 13), 3, 40)
  full = model.apply({"params": params}, tokens)
  cache = model_lib.KVCache.init(cfg, 2, 20)
  out = model.apply({"params": params}, tokens[:, :6], None, None, cache, 0)
  logits, values, cache = [out.logits], [out.values], out.cache
  for i in range(6, 13):
    step = model.apply({"params": params}, tokens[:, i:i + 1], jnp.full((2, 1), i), None,
                       cache, i)
    logits.append(step.logits)
    values.append(step.values)
    cache = step.cache
  np.testing.assert_allclose(jnp.concatenate(logits, 1), full.logits, atol=1e-4)
  np.testing.assert_allclose(jnp.concatenate(values, 1), full.values, atol=1e-4)


def test_left_padding_is_invisible(setup):
  """A left-padded prompt with skipped positions gives the unpadded logits."""
  cfg, params = setup
  model = model_lib.Transformer(cfg)
  seq = jax.random.randint(jax.random.key(4), (1, 5), 3, 40)
  plain = model.apply({"params": params}, seq)
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), seq], 1)
  mask = padded != 0
  out = model.apply({"params": params}, padded, model_lib.default_positions(mask), mask)
  np.testing.assert_allclose(out.logits[:, 3:], plain.logits, atol=1e-4)


def test_per_example_cache_index(setup):
  """Examples may write at different slots (used by search)."""
  cfg, params = setup
  model = model_lib.Transformer(cfg)
  a = jax.random.randint(jax.random.key(5), (1, 4), 3, 40)
  b = jax.random.randint(jax.random.key(6), (1, 6), 3, 40)
  cache = model_lib.KVCache.init(cfg, 2, 10)
  pa = jnp.concatenate([a, jnp.zeros((1, 2), jnp.int32)], 1)
  both = jnp.concatenate([pa, b], 0)
  out = model.apply({"params": params}, both, None, both != 0, cache, 0)
  nxt = jnp.array([[7], [8]])
  step = model.apply({"params": params}, nxt, jnp.array([[4], [6]]), None, out.cache,
                     jnp.array([4, 6]))
  ref_a = model.apply({"params": params}, jnp.concatenate([a, nxt[:1]], 1)).logits[:, -1]
  ref_b = model.apply({"params": params}, jnp.concatenate([b, nxt[1:]], 1)).logits[:, -1]
  np.testing.assert_allclose(step.logits[0, -1], ref_a[0], atol=1e-4)
  np.testing.assert_allclose(step.logits[1, -1], ref_b[0], atol=1e-4)


def test_gqa_equals_mha_with_repeated_kv():
  """GQA with K kv heads equals MHA whose kv projections repeat each head G times."""
  cfg = testing.tiny_config(vocab_size=30, num_heads=4, num_kv_heads=2)
  mha = dataclasses.replace(cfg, num_kv_heads=4)
  params = testing.random_params(cfg)
  mparams = jax.tree.map(lambda x: x, params)
  for layer in range(cfg.num_layers):
    attn = mparams[f"layer_{layer}"]["attn"]
    for name in ("k_proj", "v_proj"):
      attn[name]["kernel"] = jnp.repeat(attn[name]["kernel"], 2, axis=1)
  tokens = jax.random.randint(jax.random.key(0), (2, 9), 3, 30)
  a = model_lib.Transformer(cfg).apply({"params": params}, tokens).logits
  b = model_lib.Transformer(mha).apply({"params": mparams}, tokens).logits
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_bad_config_errors_name_the_field():
  with pytest.raises(ValueError, match="num_heads"):
    testing.tiny_config(num_heads=3, num_kv_heads=2)
  with pytest.raises(ValueError, match="embed_dim"):
    testing.tiny_config(embed_dim=0)
  with pytest.raises(ValueError, match="bogus"):
    model_lib.TransformerConfig.from_dict({"vocab_size": 5, "bogus": 1})


def test_remat_changes_neither_parameters_nor_outputs_nor_gradients(setup):
  cfg, params = setup
  remat = dataclasses.replace(cfg, remat=True)
  assert jax.tree.structure(model_lib.init_params(remat, jax.random.key(0))) == \
      jax.tree.structure(params)
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 3, 40)

  def loss(p, c):
    out = model_lib.Transformer(c).apply({"params": p}, tokens)
    return jnp.mean(jax.nn.log_softmax(out.logits)[..., 0]) + jnp.mean(out.values)

  (l0, g0), (l1, g1) = (jax.value_and_grad(loss)(params, c) for c in (cfg, remat))
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # The backward pass of the remat model recomputes the blocks: its jaxpr has checkpoints.
  assert "checkpoint" in str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(params, remat)) \
      or "remat" in str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(params, remat))


LLAMA3 = dict(rope_scaling="llama3", rope_scaling_factor=4.0, rope_low_freq_factor=1.0,
              rope_high_freq_factor=4.0, rope_original_max_len=32)


def _llama3_reference(head_dim, theta, factor, low, high, original):
  """Meta's reference ``apply_scaling`` (Llama-3.1 repo), in float64, one frequency at a time."""
  out = []
  for i in range(head_dim // 2):
    freq = 1.0 / theta ** (2 * i / head_dim)
    wavelen = 2 * np.pi / freq
    if wavelen < original / high:
      out.append(freq)
    elif wavelen > original / low:
      out.append(freq / factor)
    else:
      smooth = (original / wavelen - low) / (high - low)
      out.append((1 - smooth) * freq / factor + smooth * freq)
  return np.array(out)


def test_llama3_inv_freq_matches_reference_in_every_band():
  cfg = testing.tiny_config(vocab_size=40, head_dim=16, rope_theta=10_000.0, **LLAMA3)
  ours = np.asarray(model_lib.rope_inv_freq(cfg))
  ref = _llama3_reference(16, 10_000.0, 4.0, 1.0, 4.0, 32)
  np.testing.assert_allclose(ours, ref, rtol=1e-6)
  plain = np.asarray(model_lib.rope_inv_freq(dataclasses.replace(cfg, rope_scaling="none")))
  wavelen = 2 * np.pi / plain
  kept, divided = wavelen < 32 / 4.0, wavelen > 32 / 1.0
  assert kept.any() and divided.any() and (~kept & ~divided).any()  # all three bands
  np.testing.assert_array_equal(ours[kept], plain[kept])
  np.testing.assert_allclose(ours[divided], plain[divided] / 4.0, rtol=1e-6)


def test_rope_scaling_fields_unused_without_llama3(setup):
  """With rope_scaling="none" the other fields change nothing (bit for bit)."""
  cfg, params = setup
  other = dataclasses.replace(cfg, rope_scaling_factor=8.0, rope_original_max_len=16)
  tokens = jax.random.randint(jax.random.key(7), (2, 30), 3, 40)
  a = model_lib.Transformer(cfg).apply({"params": params}, tokens).logits
  b = model_lib.Transformer(other).apply({"params": params}, tokens).logits
  np.testing.assert_array_equal(a, b)
  scaled = dataclasses.replace(cfg, **LLAMA3)
  c = model_lib.Transformer(scaled).apply({"params": params}, tokens).logits
  assert np.abs(np.asarray(c) - np.asarray(a)).max() > 1e-3  # and llama3 does change them


def test_llama3_kv_cache_incremental_equals_full_forward(setup):
  cfg, params = setup
  cfg = dataclasses.replace(cfg, **LLAMA3)
  model = model_lib.Transformer(cfg)
  tokens = jax.random.randint(jax.random.key(8), (2, 20), 3, 40)
  full = model.apply({"params": params}, tokens).logits
  cache = model_lib.KVCache.init(cfg, 2, 24)
  out = model.apply({"params": params}, tokens[:, :12], None, None, cache, 0)
  steps = [out.logits]
  for i in range(12, 20):
    out = model.apply({"params": params}, tokens[:, i:i + 1], jnp.full((2, 1), i), None,
                      out.cache, i)
    steps.append(out.logits)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-4)


@pytest.mark.parametrize("overrides, match", [
    (dict(rope_scaling="yarn"), r"rope_scaling must be one of \('none', 'llama3'\)"),
    (dict(LLAMA3, rope_high_freq_factor=1.0), r"rope_high_freq_factor \(1.0\) must exceed"),
    (dict(LLAMA3, rope_scaling_factor=0.0), r"rope_scaling_factor must be a positive"),
    (dict(LLAMA3, rope_original_max_len=0), r"rope_original_max_len must be a positive int"),
])
def test_bad_rope_scaling_names_the_field(overrides, match):
  with pytest.raises(ValueError, match=match):
    testing.tiny_config(vocab_size=40, **overrides)
