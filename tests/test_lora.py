"""LoRA: merge == unmerged forward, step 0 == base, only adapters train, storage error, I/O."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from alphallm import checkpoint
from alphallm import data
from alphallm import lora
from alphallm import memory
from alphallm import model as model_lib
from alphallm import sharding
from alphallm import testing
from alphallm import train
from alphallm.tasks import get_task
from alphallm.tokenizer import CharTokenizer


@pytest.fixture(scope="module")
def dataset():
  tok = CharTokenizer()
  task = get_task("arithmetic")
  problems = task.generate(0, 64)
  return data.encode_examples(
      tok, [task.prompt(p) for p in problems], [task.demonstration(p) for p in problems],
      seq_len=64)


def _tokens(cfg, b=3, t=12, seed=0):
  return jax.random.randint(jax.random.key(seed), (b, t), 1, cfg.vocab_size)


def _logits(cfg, params, tokens):
  return np.asarray(model_lib.Transformer(cfg).apply({"params": params}, tokens).logits)


def _random_adapters(params, lc, seed=1):
  """Adapters with B drawn at random too, so the update is not zero."""
  ad = lora.init_adapters(params, lc, jax.random.key(seed))
  leaves, tree = jax.tree.flatten(ad)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


def test_paths_and_shapes():
  cfg = testing.tiny_config(num_heads=4, num_kv_heads=2)
  params = testing.random_params(cfg)
  lc = lora.LoraConfig(rank=3, alpha=6.0)
  ad = lora.init_adapters(params, lc, jax.random.key(0))
  flat = traverse_util.flatten_dict(ad)
  assert len(flat) == 2 * 7 * cfg.num_layers
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  assert flat[("layer_0", "attn", "q_proj", "a")].shape == (d, 3)
  assert flat[("layer_0", "attn", "k_proj", "b")].shape == (3, k * h)
  assert flat[("layer_0", "attn", "o_proj", "a")].shape == (n * h, 3)
  assert flat[("layer_0", "mlp", "down_proj", "a")].shape == (f, 3)
  assert all(not np.any(np.asarray(v)) for p, v in flat.items() if p[-1] == "b")
  a = np.asarray(flat[("layer_0", "mlp", "down_proj", "a")])
  assert 0.5 < a.std() * np.sqrt(f) < 1.5   # Kaiming fan-in scale
  assert lora.num_trainable(ad) == memory.lora_num_params(cfg, lc)
  mask = traverse_util.flatten_dict(lora.trainable_mask(params, lc))
  assert sum(mask.values()) == 7 * cfg.num_layers and not mask[("embed", "embedding")]


def test_merged_forward_equals_low_rank_forward():
  """x @ (W + s A B) == x @ W + s (x @ A) @ B, through the whole model."""
  cfg = testing.tiny_config()
  params = testing.random_params(cfg)
  lc = lora.LoraConfig(rank=4, alpha=2.0)
  ad = _random_adapters(params, lc)
  tokens = _tokens(cfg)
  merged = _logits(cfg, lora.merge(params, ad, lc), tokens)
  with lora.adapters_applied(ad, lc):
    unmerged = _logits(cfg, params, tokens)
  base = _logits(cfg, params, tokens)
  assert np.abs(merged - base).max() > 1e-2, "the adapters must change the output"
  np.testing.assert_allclose(merged, unmerged, atol=2e-5, rtol=1e-5)


def test_step_zero_is_the_base():
  cfg = testing.tiny_config()
  params = testing.random_params(cfg)
  lc = lora.LoraConfig(rank=8, alpha=32.0)
  ad = lora.init_adapters(params, lc, jax.random.key(3))
  tokens = _tokens(cfg)
  np.testing.assert_array_equal(_logits(cfg, lora.merge(params, ad, lc), tokens),
                                _logits(cfg, params, tokens))


def test_targets_subset():
  cfg = testing.tiny_config()
  params = testing.random_params(cfg)
  lc = lora.LoraConfig(rank=2, targets=("q_proj", "v_proj"))
  ad = _random_adapters(params, lc)
  assert {p[-2] for p in traverse_util.flatten_dict(ad)} == {"q_proj", "v_proj"}
  merged = traverse_util.flatten_dict(lora.merge(params, ad, lc))
  for path, w in traverse_util.flatten_dict(params).items():
    same = np.array_equal(np.asarray(merged[path]), np.asarray(w))
    assert same == (path[-2] not in ("q_proj", "v_proj")), path


@pytest.mark.parametrize("kwargs, match", [
    (dict(rank=0), "LoraConfig.rank"), (dict(alpha=-1.0), "LoraConfig.alpha"),
    (dict(targets=("q_proj", "qq")), "unknown \\['qq'\\]"),
    (dict(base_dtype="int4"), "LoraConfig.base_dtype")])
def test_config_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    lora.LoraConfig(**kwargs)


def test_missing_target_is_an_error():
  params = {"layer_0": {"mlp": {"up_proj": {"kernel": jnp.zeros((4, 8))}}}}
  with pytest.raises(ValueError, match="q_proj"):
    lora.init_adapters(params, lora.LoraConfig(targets=("q_proj",)), jax.random.key(0))


def test_int8_and_bf16_base_error_bounded():
  cfg = testing.tiny_config()
  params = testing.random_params(cfg, scale=0.05)
  tokens = _tokens(cfg)
  base = _logits(cfg, params, tokens)
  for dtype in ("bfloat16", "int8"):
    lc = lora.LoraConfig(rank=4, base_dtype=dtype)
    frozen = lora.freeze_base(params, lc)
    flat_f = traverse_util.flatten_dict(frozen, is_leaf=lambda p, x: isinstance(x, dict) and "int8" in x)
    for path in lora.target_paths(params, lc):
      w = np.asarray(lora._get(params, path + ("kernel",)))  # pylint: disable=protected-access
      stored = flat_f[path + ("kernel",)]
      err = np.abs(np.asarray(lora.dequantize(stored)) - w)
      if dtype == "int8":
        assert stored["int8"].dtype == jnp.int8
        bound = np.asarray(stored["scale"]) / 2 * (1 + 1e-6)   # s/2 per output channel
        assert np.all(err <= bound), path
        assert err.max() > 0
      else:
        assert stored.dtype == jnp.bfloat16
        assert np.all(err <= np.abs(w) * 2.0 ** -8 + 1e-30), path
    ad = lora.init_adapters(params, lc, jax.random.key(0))
    merged = lora.export_merged(frozen, ad, lc)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(merged))   # dtype restored
    out = _logits(cfg, merged, tokens)
    assert 0 < np.abs(out - base).max() < 0.05 * np.abs(base).max(), dtype
  assert lora.base_bytes(lora.freeze_base(params, lora.LoraConfig(base_dtype="int8"))) < \
      lora.base_bytes(lora.freeze_base(params, lora.LoraConfig(base_dtype="bfloat16"))) < \
      lora.base_bytes(params)


def test_planner_counts_the_stored_base():
  """memory.lora_training_bytes' base term is what freeze_base really stores."""
  cfg = testing.tiny_config(num_heads=4, num_kv_heads=2)
  params = testing.random_params(cfg)
  for dtype in lora.BASE_DTYPES:
    lc = lora.LoraConfig(rank=4, base_dtype=dtype)
    plan = memory.lora_training_bytes(cfg, lc)
    assert plan["base"] == lora.base_bytes(lora.freeze_base(params, lc)), dtype
    assert plan["optimizer"] == 2 * 4 * lora.num_trainable(
        lora.init_adapters(params, lc, jax.random.key(0)))
    assert plan["optimizer"] < memory.training_bytes(cfg.num_params()) / 4


def _lora_steps(cfg, lc, params, dataset, mesh, steps=3, lr=1e-2):
  opt = train.make_optimizer(lr, total_steps=steps)
  frozen = train.replicate(lora.freeze_base(params, lc), mesh)
  state = train.replicate(train.init_train_state(
      lora.init_adapters(params, lc, jax.random.key(0)), opt, 0), mesh)
  step = train.make_lora_train_step(cfg, lc, opt, mesh)
  losses = []
  for s in range(steps):
    state, metrics = step(state, frozen, train.shard_batch(data.batch_at(dataset, 16, s, 1),
                                                           mesh))
    losses.append(float(metrics["loss"]))
  return state, frozen, opt, losses


def test_only_adapters_train(dataset):
  cfg = testing.tiny_config()
  params = testing.random_params(cfg)
  before = jax.tree.map(np.array, params)
  lc = lora.LoraConfig(rank=4, alpha=8.0)
  state, frozen, _, losses = _lora_steps(cfg, lc, params, dataset,
                                         train.data_mesh(jax.devices()[:2]))
  assert losses[-1] < losses[0]
  # The base, as passed to the step, is bit-identical afterwards.
  for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(before)):
    np.testing.assert_array_equal(np.asarray(a), b)
  # The optimizer state covers the adapters only (mu, nu plus scalar counts).
  n = lora.num_trainable(state.params)
  opt_elems = sum(np.size(x) for x in jax.tree.leaves(state.opt_state))
  assert 2 * n <= opt_elems <= 2 * n + 8 and n < cfg.num_params() / 4
  assert all(np.any(np.asarray(b)) for p, b in traverse_util.flatten_dict(
      jax.device_get(state.params)).items() if p[-1] == "b")
  merged = traverse_util.flatten_dict(lora.merge(frozen, state.params, lc))
  for path, w in traverse_util.flatten_dict(before).items():
    changed = not np.array_equal(np.asarray(merged[path]), w)
    assert changed == (path[-1] == "kernel" and path[-2] in lc.targets), path


def test_lora_step_data_parallel_equals_single_device(dataset):
  cfg = testing.tiny_config()
  params = testing.random_params(cfg)
  lc = lora.LoraConfig(rank=4)
  one, _, _, l1 = _lora_steps(cfg, lc, params, dataset, train.data_mesh(jax.devices()[:1]), 2)
  eight, _, _, l8 = _lora_steps(cfg, lc, params, dataset, train.data_mesh(jax.devices()), 2)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_adapters_save_restore(tmp_path, dataset):
  cfg = testing.tiny_config()
  lc = lora.LoraConfig(rank=4, base_dtype="int8")
  state, _, opt, _ = _lora_steps(cfg, lc, testing.random_params(cfg), dataset,
                                 train.data_mesh(jax.devices()[:1]), steps=2)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(2, state, {"phase": "lora"})
  template = train.init_train_state(lora.init_adapters(testing.random_params(cfg, seed=9), lc,
                                                       jax.random.key(5)), opt, 1)
  step, restored, meta = ckpt.restore_latest(template)
  ckpt.close()
  assert step == 2 and meta == {"phase": "lora"}
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fit_lora_resumes_and_exports(tmp_path, dataset):
  cfg = testing.tiny_config()
  params = testing.random_params(cfg)
  lc = lora.LoraConfig(rank=4, alpha=8.0, base_dtype="bfloat16")
  hp = dict(batch_size=16, learning_rate=1e-2, warmup_steps=0, weight_decay=0.0,
            grad_clip=1.0, checkpoint_every=2, log_every=1)
  mesh = train.data_mesh(jax.devices()[:2])
  whole, hist = train.fit(type("C", (), dict(hp, steps=4)), cfg, dataset, params, mesh,
                          seed=0, ckpt_dir=None, lora=lc)
  assert len(hist) == 4 and hist[-1]["loss"] < hist[0]["loss"]
  assert jax.tree.structure(whole) == jax.tree.structure(params)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(whole))
  ckpt_dir = str(tmp_path / "fit")
  train.fit(type("C", (), dict(hp, steps=4)), cfg, dataset, params, mesh, seed=0,
            ckpt_dir=ckpt_dir, lora=lc)
  shutil.rmtree(os.path.join(ckpt_dir, "4"))       # as if it had stopped after step 2
  resumed, hist2 = train.fit(type("C", (), dict(hp, steps=4)), cfg, dataset, params, mesh,
                             seed=0, ckpt_dir=ckpt_dir, lora=lc)
  assert [h["step"] for h in hist2] == [3, 4]
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(whole)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_fit_lora_refuses_fsdp_mesh(dataset):
  cfg = testing.tiny_config()
  hp = type("C", (), dict(steps=1, batch_size=16, learning_rate=1e-3, warmup_steps=0,
                          weight_decay=0.0, grad_clip=1.0, checkpoint_every=1))
  with pytest.raises(ValueError, match="LoRA runs on a 1-D data mesh"):
    train.fit(hp, cfg, dataset, testing.random_params(cfg), sharding.make_mesh((1, 2),
              jax.devices()[:2]), seed=0, ckpt_dir=None, lora=lora.LoraConfig())
