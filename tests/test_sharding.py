"""FSDP sharding, multi-process start-up and the paper configs (8 simulated CPU devices)."""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, PartitionSpec as P

from alphallm import data
from alphallm import distributed
from alphallm import builders
from alphallm import validation
from alphallm import hf_import
from alphallm import sharding
from alphallm import testing
from alphallm import train
from alphallm.critics import CriticConfig
from alphallm.search import mcts
from alphallm.tasks import get_task
from alphallm.tokenizer import CharTokenizer

# 96 (not the char vocabulary's 89) so that the embedding splits along V, as
# Llama's 32000 does.
VOCAB = 96


@pytest.fixture(scope="module")
def dataset():
  tok = CharTokenizer()
  task = get_task("arithmetic")
  problems = task.generate(0, 64)
  return data.encode_examples(
      tok, [task.prompt(p) for p in problems], [task.demonstration(p) for p in problems],
      seq_len=64, value_targets=[float(i % 2) for i in range(64)])


def _leaves_with_paths(tree):
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(tree)}


# ---------------------------------------------------------------------------
# The rule and the mesh.


def test_fsdp_spec_rule():
  f = sharding.FSDP_AXIS
  assert sharding.fsdp_spec((8192, 28672), 16) == P(None, f)        # gate/up: largest axis F
  assert sharding.fsdp_spec((28672, 8192), 16) == P(f, None)        # down_proj
  assert sharding.fsdp_spec((8192, 64, 128), 16) == P(f, None, None)  # q_proj along D
  assert sharding.fsdp_spec((64, 128, 8192), 16) == P(None, None, f)  # o_proj along D
  assert sharding.fsdp_spec((32000, 8192), 16) == P(f, None)        # embedding along V
  assert sharding.fsdp_spec((32001, 8192), 16) == P(None, f)        # V not divisible: D
  assert sharding.fsdp_spec((64, 64), 4, min_size=0) == P(f, None)  # ties: the first axis
  assert sharding.fsdp_spec((8192,), 16) == P()                     # norms: replicated
  assert sharding.fsdp_spec((8192, 1), 16, min_size=2 ** 16) == P()  # small: replicated
  assert sharding.fsdp_spec((33, 35), 4, min_size=0) == P()         # nothing divides
  assert sharding.fsdp_spec((8192, 8192), 1) == P()                 # no fsdp axis


def test_make_mesh_shapes_and_errors():
  mesh = sharding.make_mesh((1, -1))
  assert dict(mesh.shape) == {"data": 1, "fsdp": 8}
  assert all(t == AxisType.Auto for t in mesh.axis_types)
  assert dict(sharding.make_mesh((2, -1)).shape) == {"data": 2, "fsdp": 4}
  assert dict(sharding.make_mesh((-1, 2), jax.devices()[:4]).shape) == {"data": 2, "fsdp": 2}
  with pytest.raises(ValueError, match="does not divide"):
    sharding.make_mesh((3, -1))
  with pytest.raises(ValueError, match="needs 4 devices"):
    sharding.make_mesh((2, 2))
  with pytest.raises(ValueError, match=r"\(data, fsdp\)"):
    sharding.make_mesh((8,))
  explicit = jax.make_mesh((2, 4), sharding.MESH_AXES,
                           axis_types=(AxisType.Explicit,) * 2)
  with pytest.raises(ValueError, match="AxisType.Auto"):
    sharding.param_sharding({"w": jnp.zeros((8, 8))}, explicit)
  with pytest.raises(ValueError, match="lack"):
    sharding.param_sharding({"w": jnp.zeros((8, 8))}, train.data_mesh())


# ---------------------------------------------------------------------------
# Placement: parameters and optimizer state really are split.


def test_train_state_is_sharded_like_the_rule():
  cfg = testing.tiny_config(VOCAB)
  mesh = sharding.make_mesh((2, 4))
  opt = train.make_optimizer(1e-3, total_steps=4)
  params = testing.random_params(cfg)
  full_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  state = sharding.init_train_state(params, opt, 0, mesh, min_size=0)

  specs = _leaves_with_paths(jax.tree.map(lambda x: x.sharding.spec, state.params))
  f = sharding.FSDP_AXIS
  assert specs["['embed']['embedding']"] == P(f, None)                       # [96, 32]
  assert specs["['layer_0']['attn']['q_proj']['kernel']"] == P(f, None, None)  # [32, 4, 8]
  assert specs["['layer_0']['attn']['o_proj']['kernel']"] == P(None, None, f)  # [4, 8, 32]
  assert specs["['layer_0']['mlp']['gate_proj']['kernel']"] == P(None, f)     # [32, 64]
  assert specs["['layer_0']['mlp']['down_proj']['kernel']"] == P(f, None)     # [64, 32]
  assert specs["['layer_0']['input_norm']['scale']"] == P()
  assert specs["['value_head']['bias']"] == P()

  # Per-device shards: 1/4 of the split axis, replicated over the 2 data replicas.
  gate = state.params["layer_0"]["mlp"]["gate_proj"]["kernel"]
  assert gate.shape == (32, 64)
  assert {s.data.shape for s in gate.addressable_shards} == {(32, 16)}
  assert len({str(s.index) for s in gate.addressable_shards}) == 4
  norm = state.params["final_norm"]["scale"]
  assert {s.data.shape for s in norm.addressable_shards} == {(32,)}

  # AdamW's moments are sharded exactly like their parameters; counts replicated.
  adam = state.opt_state[1][0]
  for moments in (adam.mu, adam.nu):
    same = jax.tree.map(lambda m, p: m.sharding == p.sharding, moments, state.params)
    assert all(jax.tree.leaves(same))
  assert adam.count.sharding.spec == P()

  # Each device holds about a quarter of the parameters (norms and value head whole).
  per_device = sharding.bytes_per_device(state.params)
  assert len(per_device) == 8
  assert max(per_device.values()) < 0.3 * full_bytes

  # shard_train_state of an unsharded state gives the same layout.
  plain = train.init_train_state(params, opt, 0)
  placed = sharding.shard_train_state(plain, mesh, min_size=0)
  same = jax.tree.map(lambda a, b: a.sharding == b.sharding, placed, state)
  assert all(jax.tree.leaves(same))


# ---------------------------------------------------------------------------
# The step equals the data-parallel and single-device steps.


def _dp_run(cfg, opt, params, ds, devices, steps):
  mesh = train.data_mesh(devices)
  step = train.make_train_step(cfg, opt, mesh, value_coef=0.5)
  state = train.replicate(train.init_train_state(params, opt, 0), mesh)
  losses = []
  for s in range(steps):
    state, metrics = step(state, train.shard_batch(data.batch_at(ds, 16, s, seed=1), mesh))
    losses.append(float(metrics["loss"]))
  return state, losses


def test_fsdp_step_equals_data_parallel_and_single_device(dataset):
  cfg = testing.tiny_config(VOCAB)
  opt = train.make_optimizer(3e-3, total_steps=4, warmup_steps=0, weight_decay=0.01)
  params = jax.tree.map(np.asarray, testing.random_params(cfg))
  steps = 2

  mesh = sharding.make_mesh((2, 4))
  step = sharding.make_fsdp_train_step(cfg, opt, mesh, value_coef=0.5, min_size=0)
  state = sharding.init_train_state(params, opt, 0, mesh, min_size=0)
  layout = jax.tree.map(lambda x: x.sharding, state)
  fsdp_losses = []
  for s in range(steps):
    batch = sharding.shard_batch(data.batch_at(dataset, 16, s, seed=1), mesh)
    state, metrics = step(state, batch)
    fsdp_losses.append(float(metrics["loss"]))
  assert set(metrics) == {"loss", "token_accuracy", "grad_norm", "tokens", "value_mse"}
  # The FSDP schedule: weights are all-gathered; activations are never
  # resharded to match the weights (GSPMD does that, with all-to-alls,
  # without the activation constraints).
  hlo = step.lower(state, batch).compile().as_text()
  assert "all-gather" in hlo and "all-to-all" not in hlo

  # Gradients and optimizer state stayed sharded through the steps.
  same = jax.tree.map(lambda x, sh: x.sharding == sh, state, layout)
  assert all(jax.tree.leaves(same))

  dp8, dp8_losses = _dp_run(cfg, opt, params, dataset, jax.devices(), steps)
  dp1, dp1_losses = _dp_run(cfg, opt, params, dataset, jax.devices()[:1], steps)
  np.testing.assert_allclose(fsdp_losses, dp8_losses, rtol=1e-5)
  np.testing.assert_allclose(fsdp_losses, dp1_losses, rtol=1e-5)
  changed = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.params,
                         params)
  assert max(jax.tree.leaves(changed)) > 1e-4, "the steps must change the parameters"
  # atol: AdamW's first steps move a parameter by ~lr * g / |g| whatever |g|, so
  # for gradients near 0 the summation order shows; the 1- vs 8-device
  # data-parallel steps differ by up to ~7e-6 there too (test_train.py).
  for ref in (dp8, dp1):
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(ref.opt_state)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-7)


def test_sharded_state_checkpoints_and_restores_sharded(tmp_path):
  from alphallm import checkpoint  # pylint: disable=g-import-not-at-top
  cfg = testing.tiny_config(VOCAB)
  mesh = sharding.make_mesh((2, 4))
  opt = train.make_optimizer(1e-3, total_steps=4)
  state = sharding.init_train_state(testing.random_params(cfg), opt, 0, mesh, min_size=0)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(1, state)
  template = sharding.init_train_state(testing.random_params(cfg, seed=5), opt, 0, mesh,
                                       min_size=0)
  step, restored, _ = ckpt.restore_latest(template)
  ckpt.close()
  assert step == 1
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert got.sharding == want.sharding
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_shard_batch_checks_divisibility():
  mesh = sharding.make_mesh((2, 4))
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    sharding.shard_batch({"tokens": np.zeros((12, 4), np.int32)}, mesh)
  batch = sharding.shard_batch({"tokens": np.arange(64, dtype=np.int32).reshape(16, 4)}, mesh)
  assert {s.data.shape for s in batch["tokens"].addressable_shards} == {(2, 4)}


# ---------------------------------------------------------------------------
# Loading an HF checkpoint straight into its shards.


def test_hf_checkpoint_loads_sharded(tmp_path):
  tiny = importlib.import_module("experiments.paper.tiny_hf")
  tiny.write_checkpoint(str(tmp_path), vocab_size=VOCAB, dtype="float32")
  mesh = sharding.make_mesh((1, -1))
  config, params = hf_import.load_hf_checkpoint(
      str(tmp_path), sharding=sharding.hf_param_sharding(mesh, min_size=1024))
  want = sharding.param_sharding(params, mesh, min_size=1024)
  same = jax.tree.map(lambda x, sh: x.sharding == sh, params, want)
  assert all(jax.tree.leaves(same))
  lm_head = params["lm_head"]["kernel"]                        # [64, 96]: along V
  assert lm_head.sharding.spec == P(None, sharding.FSDP_AXIS)
  assert {s.data.shape for s in lm_head.addressable_shards} == {(64, 12)}
  # The sharded parameters run through the model unchanged.
  reference = hf_import.load_hf_checkpoint(str(tmp_path))[1]
  tokens = jnp.arange(1, 17, dtype=jnp.int32).reshape(2, 8)
  from alphallm import model as model_lib  # pylint: disable=g-import-not-at-top
  apply = jax.jit(lambda p: model_lib.Transformer(config).apply({"params": p}, tokens).logits)
  np.testing.assert_allclose(apply(params), apply(reference), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Memory planning.


def test_choose_strategy_and_memory_numbers():
  gb = 1e9
  assert sharding.choose_strategy(1_000_000_000, 80 * gb) == "data_parallel"  # 16 GB
  assert sharding.choose_strategy(3_500_000_000, 80 * gb) == "data_parallel"  # 56 GB of 56
  assert sharding.choose_strategy(3_600_000_000, 80 * gb) == "fsdp"
  for size in ("7b", "13b", "70b"):
    assert sharding.choose_strategy(sharding.llama2_config(size).num_params(), 95 * gb) == "fsdp"
  with pytest.raises(ValueError):
    sharding.choose_strategy(0, 80 * gb)

  llama70 = sharding.llama2_config("70b")
  assert llama70.num_params(include_value_head=False) == 68_976_648_192  # HF's count
  assert sharding.training_bytes(llama70.num_params()) == pytest.approx(1.1036e12, rel=1e-3)
  assert sharding.kv_bytes_per_token(llama70) == 320 * 1024
  assert sharding.kv_bytes_per_token(sharding.llama2_config("7b")) == 512 * 1024


# ---------------------------------------------------------------------------
# Multi-process start-up: the single-process paths.


@pytest.fixture
def no_cluster(monkeypatch):
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
              "SLURM_JOB_ID", "SLURM_NTASKS", "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(distributed, "_tpu_chips_present", lambda: False)
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  return calls


def test_initialize_is_a_noop_for_one_process(no_cluster, monkeypatch):
  assert distributed.detect_cluster() is None
  assert distributed.initialize() is False
  assert distributed.initialize(num_processes=1) is False
  monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
  assert distributed.initialize(coordinator_address="10.0.0.1:1234") is False
  monkeypatch.delenv("JAX_NUM_PROCESSES")
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "1")                # a one-task Slurm job
  assert distributed.initialize() is False
  assert no_cluster == [], "jax.distributed.initialize must not be called"
  assert jax.process_count() == 1
  info = distributed.process_summary()
  assert info["process_count"] == 1 and info["global_devices"] == 8
  assert distributed.is_main_process()


def test_initialize_passes_multi_process_settings_through(no_cluster, monkeypatch):
  assert distributed.initialize("10.0.0.1:1234", 2, 1) is True
  assert no_cluster[-1] == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2,
                            "process_id": 1, "local_device_ids": None}
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host0:99")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  assert distributed.initialize() is True
  assert no_cluster[-1]["num_processes"] == 4 and no_cluster[-1]["process_id"] == 3
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(var)
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "16")
  assert distributed.detect_cluster() == "slurm"
  assert distributed.initialize() is True                # auto-detected by JAX
  assert no_cluster[-1]["coordinator_address"] is None
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
    distributed.initialize()


def test_global_and_local_meshes():
  g = distributed.global_mesh((2, -1))
  assert dict(g.shape) == {"data": 2, "fsdp": 4}
  assert set(g.devices.flat) == set(jax.devices())
  local = distributed.local_mesh()
  assert dict(local.shape) == {"data": 1, "fsdp": jax.local_device_count()}
  assert isinstance(local, Mesh)


# ---------------------------------------------------------------------------
# The paper configs.


def _config(name):
  return importlib.import_module(f"experiments.paper.{name}")


@pytest.mark.parametrize("name,c,c_min_root,c_min,rounds,prompts", [
    ("gsm8k_llama2_70b", 1.5, 40, 2, 2, (2800, 2800)),
    ("math_wizardmath_70b", 1.0, 20, 3, 1, (5900,)),
])
def test_paper_configs(name, c, c_min_root, c_min, rounds, prompts):
  module = _config(name)
  cfg = module.get_config()
  s = cfg.search
  assert (s.pb_c_init, s.granularity) == (c, "option")
  ab = s.adaptive_branching
  assert ab.enabled and ab.alpha == 1.0
  assert (ab.c_max_root, ab.c_max, ab.c_min_root, ab.c_min) == (60, 10, c_min_root, c_min)
  assert s.rollout.enabled and s.rollout.num_rollouts == 4
  assert (s.weights.value, s.weights.prm, s.weights.orm) == (1.0, 1.0, 1.0)
  mcts.SearchConfig.from_config(s)                 # valid for the search
  critic = CriticConfig.from_config(cfg.critics.critic)
  assert critic.train.learning_rate == 1e-6 and critic.collect.num_samples == 50
  assert critic.train.steps == math.ceil(cfg.critics.num_problems * 50 / 128)  # one epoch
  for sft in (cfg.sft, cfg.loop.sft):
    assert (sft.batch_size, sft.learning_rate, sft.end_learning_rate) == (128, 5e-6, 1e-6)
    assert sft.epochs == 3 and sft.warmup_steps == math.ceil(0.1 * sft.steps)
  assert cfg.loop.rounds == rounds and tuple(cfg.loop.round_prompts) == prompts
  assert cfg.task.name == name.split("_")[0]
  assert cfg.model.checkpoint.startswith("/path/to/") and cfg.model.tokenizer
  assert cfg.sharding.strategy == "fsdp" and tuple(cfg.sharding.mesh_shape) == (1, "auto")
  # Every key is one the loop reads, with values it supports; the splits fit the train set.
  validation.check_keys(cfg)
  validation.check_names(cfg)
  if cfg.task.name == "gsm8k":
    train_size = module.GSM8K_TRAIN - module.NUM_SHOTS
  else:
    train_size = module.MATH_TRAIN
  assert cfg.data.num_demos + cfg.critics.num_problems + sum(prompts) <= 0.98 * train_size

  # The docstring's numbers are the ones the code computes.
  doc = " ".join(module.__doc__.split())          # line breaks as spaces
  llama70 = sharding.llama2_config("70b")
  n = llama70.num_params()
  assert f"P = {n / 1e9:.2f}e9" in doc
  assert f"2 B x P = {2 * n / 1e9:.2f} GB" in doc
  assert f"16 B x P = {16 * n / 1e9:.1f} GB" in doc
  for devices in (32, 64, 16):                     # v5p-64, v4-128, 16 x H100
    assert f"{16 * n / devices / 1e9:.1f} GB per" in doc
  seq = cfg.data.seq_len
  act = llama70.num_layers * (34 * llama70.embed_dim + 5 * llama70.num_heads * seq) * seq
  assert f"= {act / 1e9:.1f} GB" in doc
  assert f"{sharding.kv_bytes_per_token(llama70):,} B" in doc
  mem = sharding.search_memory_bytes(llama70, s, module.PROMPT_SLOTS)
  assert (f"holds {mem['total'] / 1e9:.2f} GB: tree {mem['nodes'] / 1e9:.2f} GB, prompt "
          f"{mem['prompt_kv'] / 1e9:.2f} GB, candidate sampling "
          f"{mem['candidate_kv'] / 1e9:.2f} GB, rollouts {mem['rollout_kv'] / 1e9:.2f} GB") in doc
  batch = cfg.eval.search_batch_size
  total = (2 * n + batch * mem["total"]) / 1e9
  assert f"{2 * n / 1e9:.2f} + {batch} x {mem['total'] / 1e9:.2f} = {total:.0f} GB" in doc


def test_tiny_hf_config_and_checkpoint(tmp_path):
  module = _config("tiny_hf")
  cfg = module.get_config()
  for key in ("model.checkpoint", "model.tokenizer", "sharding.strategy", "sharding.mesh_shape"):
    section, field = key.split(".")
    assert field in cfg[section], key
  mcts.SearchConfig.from_config(cfg.search)
  CriticConfig.from_config(cfg.critics.critic)
  texts = ["Q: Tom has 3 apples and buys 4 more.\n3 + 4 = 7\nA: 7\n"] * 50
  module.write_tiny_llama(str(tmp_path), texts=texts)
  from alphallm import hf_tokenizer  # pylint: disable=g-import-not-at-top
  tok = hf_tokenizer.load_tokenizer(str(tmp_path))
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 0)
  assert tok.decode(tok.encode(texts[0])) == texts[0]
  mesh = builders.build_mesh(cfg)
  config, params = hf_import.load_hf_checkpoint(
      str(tmp_path), sharding=sharding.hf_param_sharding(mesh, cfg.sharding.min_size))
  assert config.vocab_size % 8 == 0 and config.vocab_size >= tok.vocab_size
  assert params["layer_0"]["mlp"]["up_proj"]["kernel"].sharding.spec == P(
      None, sharding.FSDP_AXIS)
