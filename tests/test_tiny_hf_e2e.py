"""The paper configs' code path end to end: HF checkpoint, GSM8K, FSDP (8 CPU devices).

``experiments/paper/tiny_hf.py``, shrunk, on a tiny GSM8K-format dataset and
a random Llama-shaped checkpoint + BPE tokenizer written into ``tmp_path``
(no ``../shared`` data, no network): ``train_and_evaluate`` runs round 0
(FSDP warm-start SFT from the imported weights, a value critic, greedy and
eta-MCTS on the test split) and round 1 (held-out train prompts, search,
SFT, evaluation), then a rerun in the same workdir must do no work again.
"""

import importlib
import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from alphallm import builders
from alphallm import critic_lifecycle
from alphallm import methods
from alphallm import critic_data
from alphallm import critics as critics_lib
from alphallm import data
from alphallm import evaluation
from alphallm import experiment
from alphallm import hf_import
from alphallm import io_utils
from alphallm import loop
from alphallm import results as results_lib
from alphallm import sharding
from alphallm.search import mcts
from alphallm.tasks import Problem

tiny_hf = importlib.import_module("experiments.paper.tiny_hf")

_NAMES = ("Tom", "Ann", "Raj", "Mia", "Leo", "Zoe", "Sam", "Ivy")
_ITEMS = ("apples", "pens", "cards", "books", "shells")


def _gsm8k_records(num: int, offset: int) -> list[dict[str, str]]:
  """``num`` distinct GSM8K-format records (question; steps with annotations; ``#### N``)."""
  out = []
  for i in range(offset, offset + num):
    name, item = _NAMES[i % len(_NAMES)], _ITEMS[(i // len(_NAMES)) % len(_ITEMS)]
    a, b = 2 + i % 7, 3 + i // 7
    out.append({
        "question": f"{name} has {a} {item} and gets {b} more. How many {item} now?",
        "answer": f"{name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {item}.\n#### {a + b}"})
  return out


def _write_jsonl(path, records) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
  """``(gsm8k dir, checkpoint dir)``: 48 train / 12 test problems, tokenizer + weights."""
  root = tmp_path_factory.mktemp("tiny_hf")
  gsm8k = root / "gsm8k"
  gsm8k.mkdir()
  train, test = _gsm8k_records(48, 0), _gsm8k_records(12, 100)
  _write_jsonl(gsm8k / "train.jsonl", train)
  _write_jsonl(gsm8k / "test.jsonl", test)
  texts = [f"Q: {r['question']}\n{r['answer']}\nA: 9\n" for r in train + test]
  ckpt = str(root / "tiny_llama")
  tiny_hf.write_tiny_llama(ckpt, texts=texts * 4)
  return str(gsm8k), ckpt


def _config(gsm8k: str, ckpt: str):
  """tiny_hf.py pointed at ``tmp_path`` and shrunk further (8 devices: mesh (2, 4))."""
  c = tiny_hf.get_config()
  c.model.checkpoint = c.model.tokenizer = ckpt
  c.task.knobs.data_dir = c.task.eval_knobs.data_dir = gsm8k
  c.data.num_demos, c.data.num_eval, c.data.seq_len = 16, 8, 128
  c.sft.steps = 4                        # capped at sft.epochs = 1: 16 demos / 8 = 2 steps
  c.sft.warmup_steps = 0                 # as loop.sft: both SFTs share one compiled step
  c.critics.num_problems, c.critics.num_calibration_problems = 8, 4
  c.critics.critic.seq_len = 128
  c.critics.critic.collect.max_new_tokens = 16
  c.eval.max_new_tokens = 16
  c.search.max_completion_len = 24
  c.loop.prompts_per_round = 12          # loop.round_prompts = (8,) takes precedence
  return c


def _read_problems(path):
  with open(path, encoding="utf-8") as f:
    return [Problem.from_json(json.loads(line)) for line in f]


def _leaf(params, path):
  for key in path:
    params = params[key]
  return params


def _files_under(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root) for f in files)


def test_tiny_hf_paper_path_end_to_end_and_resume(paths, tmp_path, monkeypatch):
  gsm8k, ckpt = paths
  config = _config(gsm8k, ckpt)
  workdir = str(tmp_path / "run")
  out = experiment.train_and_evaluate(config, workdir)

  # Rows for rounds 0 and 1, greedy and eta-MCTS, on the GSM8K test split.
  rows = io_utils.read_json(os.path.join(workdir, "results.json"))["rows"]
  assert rows == out["rows"]
  assert {(r["round"], r["decoding"]) for r in rows} == {
      (k, m) for k in (0, 1) for m in ("greedy", "mcts")}
  for r in rows:
    results_lib.validate_row(r)
    assert r["task"] == "gsm8k" and r["num_problems"] == 8
  by_name = {r["decoding"]: r for r in rows if r["round"] == 0}
  assert by_name["mcts"]["forward_passes_per_problem"] > by_name["greedy"][
      "forward_passes_per_problem"]
  eval_problems = _read_problems(os.path.join(workdir, "eval_problems.jsonl"))
  assert {p.data["split"] for p in eval_problems} == {"test"}

  # Round 1 searched held-out train problems (GSM8K has no rule-based imagination).
  prompts = _read_problems(os.path.join(workdir, "round1", "prompts.jsonl"))
  assert len(prompts) == 8
  assert {p.data["split"] for p in prompts} == {"train"}
  assert {p.data["origin"]["source"] for p in prompts} == {"held_out"}
  ctx = builders.build_context(config, workdir)
  used = {p.question for p in ctx.demos + ctx.eval_problems + ctx.fresh_problems(config.critics.num_problems, tag="critic_data")}
  assert not used & {p.question for p in prompts}
  assert ctx.mesh.shape == {"data": 2, "fsdp": 4}

  # The round-0 policy: fine-tuned from the imported checkpoint, FSDP-sharded.
  # (warm_start restores the finished SFT: it trains nothing here.)
  imported = hf_import.load_hf_checkpoint(ckpt, vocab_size=ctx.tokenizer.vocab_size)[1]
  policy = loop.warm_start(ctx)
  ctx.writer.close()
  mlp = ("layer_0", "mlp", "up_proj", "kernel")                 # [64, 128]: along F
  up = _leaf(policy, mlp)
  assert up.sharding.spec == P(None, sharding.FSDP_AXIS)
  assert {s.data.shape for s in up.addressable_shards} == {(64, 32)}
  assert _leaf(policy, ("final_norm", "scale")).sharding.spec == P()
  assert max(sharding.bytes_per_device(policy).values()) < 0.5 * sum(
      x.nbytes for x in jax.tree.leaves(policy))
  for path in (mlp, ("embed", "embedding"), ("lm_head", "kernel")):
    assert not np.allclose(np.asarray(_leaf(policy, path)), np.asarray(_leaf(imported, path)))
  steps = [r["step"] for r in ctx.writer.records("sft_round0")]
  assert steps == [1, 2], "sft.epochs = 1 caps the 4 steps at one pass over 16 demos"

  # A rerun does no finished work again: no training step, search, sampling or
  # evaluation; the same rows, metrics and files.
  before = {name: open(os.path.join(workdir, name), encoding="utf-8").read()
            for name in ("results.json", "metrics.jsonl", "round1/prompts.jsonl")}
  files = _files_under(os.path.join(workdir, "checkpoints"))

  def forbidden(what):
    def fail(*args, **kwargs):
      raise AssertionError(f"the resumed run redid finished work: {what}")
    return fail

  monkeypatch.setattr(data, "batch_at", forbidden("a training step"))
  monkeypatch.setattr(loop, "_search_shard", forbidden("a search shard"))
  monkeypatch.setattr(critic_data, "collect_critic_data", forbidden("critic data"))
  monkeypatch.setattr(evaluation, "evaluate", forbidden("an evaluation"))
  again = experiment.train_and_evaluate(_config(gsm8k, ckpt), workdir)
  assert again["rows"] == rows
  for name, text in before.items():
    assert open(os.path.join(workdir, name), encoding="utf-8").read() == text, name
  assert _files_under(os.path.join(workdir, "checkpoints")) == files


# ---------------------------------------------------------------------------
# The pieces: no training, each in seconds.


def test_sft_disabled_starts_from_the_checkpoint(paths, tmp_path):
  gsm8k, ckpt = paths
  config = _config(gsm8k, ckpt)
  config.sft.enabled = False                   # the paper's 70B runs: no warm-start SFT
  ctx = builders.build_context(config, str(tmp_path))
  policy = loop.warm_start(ctx)
  ctx.writer.close()
  imported = hf_import.load_hf_checkpoint(ckpt, vocab_size=ctx.tokenizer.vocab_size)[1]
  jax.tree.map(np.testing.assert_array_equal, policy, imported)
  # Loaded straight into its FSDP shards; the value head is fresh (zero, as model.init).
  assert _leaf(policy, ("layer_0", "mlp", "up_proj", "kernel")).sharding.spec == P(
      None, sharding.FSDP_AXIS)
  np.testing.assert_array_equal(policy["value_head"]["kernel"], 0.0)
  assert not os.path.exists(tmp_path / "checkpoints" / "sft_round0")


def test_critic_trunk_from_a_checkpoint(paths, tmp_path):
  gsm8k, ckpt = paths
  config = _config(gsm8k, ckpt)
  config.critics.checkpoint = ckpt
  config.critics.critic.model = {"dtype": "float32"}
  experiment.validate_config(config)
  ctx = builders.build_context(config, str(tmp_path))
  ctx.writer.close()
  base = critics_lib.CriticConfig.from_config(config.critics.critic)
  critic = critic_lifecycle.initial_critic(ctx, base, "value", None)
  assert (critic.kind, critic.shared_trunk) == ("value", False)
  assert critic.config == ctx.model_cfg        # the same tiny Llama, vocabulary cut alike
  imported = hf_import.load_hf_checkpoint(ckpt, vocab_size=ctx.tokenizer.vocab_size)[1]
  jax.tree.map(np.testing.assert_array_equal, critic.params, imported)
  config.critics.critic.model = {"num_layers": 1}
  base = critics_lib.CriticConfig.from_config(config.critics.critic)
  with pytest.raises(ValueError, match=r"config.critics.critic.model.num_layers=1 disagrees "
                     r"with .*config.json \(config.critics.checkpoint\), which gives 2"):
    critic_lifecycle.initial_critic(ctx, base, "value", None)


def test_search_dtype_casts_the_policy(paths):
  config = _config(*paths)
  params = {"w": jax.numpy.ones((2, 3), jax.numpy.float32)}
  assert builders.cast_for_search(config, params)["w"] is params["w"]   # float32 already
  config.model.search_dtype = "bfloat16"
  assert builders.cast_for_search(config, params)["w"].dtype == jax.numpy.bfloat16


def _set(config, key, value):
  section, _, name = key.rpartition(".")
  node = config
  for part in section.split("."):
    node = node[part]
  with node.unlocked():
    node[name] = value


@pytest.mark.parametrize("key,value,error", [
    ("model.num_layers", 3, r"config.model.num_layers=3: an architecture key, but "
     r"config.model.checkpoint="),
    ("loop.shuffle", True, r"config.loop.shuffle=True: unknown key"),
    ("sft.stepz", 3, r"config.sft.stepz=3: unknown key"),
    ("loop.imagination_mix", {"perturb": 0.5, "backward": 0.5},
     "task 'gsm8k' has no rule-based imagination"),
    ("loop.imagination_mix", {"held_out": 1.0, "perturb": 0.5}, "cannot be mixed"),
    ("loop.imagination_mix", {"held_out": 0.0}, "every weight is 0"),
    ("loop.round_prompts", (8,), None),
    ("loop.rounds", 2, r"config.loop.round_prompts=\(8,\): needs one entry per round "
     r"\(config.loop.rounds=2\)"),
    ("model.rollout_checkpoint", "/x", "config.model.rollout_checkpoint='/x': not supported"),
    ("sharding.strategy", "dp", r"config.sharding.strategy='dp': unknown value; allowed: "
     r"'data_parallel', 'fsdp'"),
    ("sharding.mesh_shape", (3, "auto"), r"config.sharding.mesh_shape=\(3, 'auto'\): does not "
     "fit the 8 devices"),
    ("sft.epochs", -1, "config.sft.epochs=-1.0: must be >= 0"),
    ("model.search_dtype", "int8", "config.model.search_dtype='int8': unknown dtype"),
    ("model.checkpoint", "/nonexistent/ckpt", "config.model.checkpoint='/nonexistent/ckpt': "
     "does not exist"),
])
def test_config_errors_name_the_key(paths, key, value, error):
  config = _config(*paths)
  _set(config, key, value)
  if error is None:
    experiment.validate_config(config)
    return
  with pytest.raises((ValueError, FileNotFoundError), match=error):
    experiment.validate_config(config)


def _with_specials(tmp_path, ckpt: str, name: str, specials: dict) -> str:
  """A copy of ``ckpt`` whose tokenizer_config.json names other special tokens."""
  other = tmp_path / name
  other.mkdir()
  for file in ("tokenizer.json", "config.json", "model.safetensors"):
    (other / file).write_bytes(open(os.path.join(ckpt, file), "rb").read())
  (other / "tokenizer_config.json").write_text(json.dumps(specials))
  return str(other)


@pytest.mark.parametrize("name,specials,ids", [
    # BOS and EOS swapped: pad 0 (UNK), bos 2, eos 1.
    ("swapped", {"unk_token": "<unk>", "bos_token": "</s>", "eos_token": "<s>"}, (0, 2, 1)),
    # EOS only (Qwen2's null BOS, Llama-3's missing PAD): PAD = BOS = EOS.
    ("eos_only", {"eos_token": "</s>"}, (2, 2, 2)),
])
def test_any_special_ids_reach_the_search(paths, tmp_path, monkeypatch, name, specials, ids):
  gsm8k, ckpt = paths
  config = _config(gsm8k, ckpt)
  config.model.tokenizer = _with_specials(tmp_path, ckpt, name, specials)
  ctx = builders.build_context(config, str(tmp_path / "run"))
  ctx.writer.close()
  tok = ctx.tokenizer
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == ids
  seen = []
  monkeypatch.setattr(mcts, "make_search", lambda *a, **kw: seen.append(kw))
  methods.build_search(ctx, {})
  methods.search_decoder(ctx, {})
  assert [(kw["pad_id"], kw["bos_id"]) for kw in seen] == [(tok.pad_id, tok.bos_id)] * 2


def test_tokenizer_ids_and_vocabulary_are_checked(paths, tmp_path):
  gsm8k, ckpt = paths
  # No EOS: nothing to stop generation at, nor for PAD and BOS to fall back on.
  other = _with_specials(tmp_path, ckpt, "no_eos", {"unk_token": "<unk>", "bos_token": "<s>"})
  config = _config(gsm8k, ckpt)
  config.model.tokenizer = other
  with pytest.raises(ValueError, match=rf"config.model.tokenizer='{other}': no EOS token for "):
    builders.build_tokenizer(config)
  # A checkpoint with fewer rows than the tokenizer has ids.
  small = tmp_path / "small"
  tiny_hf.write_checkpoint(str(small), vocab_size=64, dtype="float32")
  config = _config(gsm8k, ckpt)
  config.model.checkpoint = str(small)
  tokenizer = builders.build_tokenizer(config)
  with pytest.raises(ValueError, match=rf"{small}/config.json: vocab_size=64 is smaller than "
                     rf"the {tokenizer.vocab_size} ids"):
    builders.build_model_config(config, tokenizer)


def test_eval_task_must_format_completions_alike(paths):
  config = _config(*paths)
  config.task.eval_knobs.answer_line = "sentence"
  task = builders.build_task(config)
  with pytest.raises(ValueError, match="config.task.eval_knobs gives answer_prefix='The answer "
                     "is ' but config.task.knobs gives 'A: '"):
    builders.build_eval_task(config, task)
