"""Critics: target positions, MC step labels, tool ORM, training, calibration."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphallm import critic_data
from alphallm import critics
from alphallm import data
from alphallm import graders
from alphallm import model as model_lib
from alphallm import sampling
from alphallm import testing
from alphallm import train
from alphallm.tasks import get_task
from alphallm.tokenizer import CharTokenizer

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
GSM8K_TRAIN = os.path.join(
    os.environ.get("ALPHALLM_GSM8K_DIR")
    or os.path.join(os.path.dirname(_TESTS_DIR), "..", "shared", "data", "gsm8k"), "train.jsonl")


@pytest.fixture(scope="module")
def tok():
  return CharTokenizer()


@pytest.fixture(scope="module")
def arith():
  return get_task("arithmetic")


def _problem(task):
  """2+3 then *2: answer 10."""
  return task._problem(2, [("+", 3), ("*", 2)])


# ---------------------------------------------------------------------------
# Calibration metrics on hand-computed examples.


def test_calibration_hand_computed():
  scores = [0.05, 0.25, 0.25, 0.75, 0.75, 0.95]
  labels = [0, 0, 1, 1, 0, 1]
  m = critics.calibration(scores, labels)
  # Predicted positive: idx 3, 4, 5; actual: 2, 3, 5. TP = 2, FP = 1, FN = 1.
  assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
  # Bins 0, 2, 7, 9: |0-.05|*1 + |.5-.25|*2 + |.5-.75|*2 + |1-.95|*1, over 6.
  assert m["ece"] == pytest.approx((0.05 + 0.5 + 0.5 + 0.05) / 6)
  assert m["accuracy"] == pytest.approx(4 / 6)
  assert (m["n"], m["positives"], m["predicted_positives"]) == (6, 3, 3)


def test_calibration_perfect_clipped_and_degenerate():
  m = critics.calibration([0.7] * 10, [1] * 7 + [0] * 3)
  assert m["ece"] == pytest.approx(0.0, abs=1e-12)
  assert m["precision"] == pytest.approx(0.7) and m["recall"] == 1.0
  # Out-of-range scores are clipped into the end bins: both perfectly calibrated.
  m = critics.calibration([1.3, -0.2], [1, 0])
  assert m["ece"] == pytest.approx(0.0) and m["brier"] == pytest.approx(0.0)
  m = critics.calibration([0.1, 0.2], [1, 1])
  assert m["precision"] == 0.0 and m["recall"] == 0.0  # nothing predicted positive
  assert m["ece"] == pytest.approx(0.85)


# ---------------------------------------------------------------------------
# Where value targets land.


def _data(prompts, completions, outcomes, step_labels=None, root=None):
  n = len(prompts)
  return critic_data.CriticData(
      prompts=list(prompts), completions=list(completions), problem_index=np.arange(n),
      outcomes=np.asarray(outcomes, np.float32),
      root_labels=np.asarray(root if root is not None else outcomes, np.float32),
      step_labels=None if step_labels is None else [np.asarray(s, np.float32)
                                                     for s in step_labels])


def test_value_targets_land_at_documented_positions(tok):
  prompt, good, bad = "Q: (2+3)*2\n", "2+3=5\n5*2=10\nA: 10", "2+3=5\n5*2=11\nA: 11"
  d = _data([prompt, prompt], [good, bad], [1.0, 0.0], step_labels=[[1.0, 0.75, 1.0],
                                                                      [1.0, 0.25, 0.0]],
            root=[0.5, 0.5])
  p = 1 + len(prompt)           # BOS + prompt
  eos = p + len(good)           # same length for both rows
  step_ends = [p + good.index("\n"), p + good.index("\n", good.index("\n") + 1)]

  value = critic_data.critic_dataset("value", tok, d, 48, policy_targets=True)
  assert value["tokens"][0, eos] == tok.eos_id
  np.testing.assert_array_equal(np.flatnonzero(value["value_mask"][0]), np.arange(p - 1, eos + 1))
  np.testing.assert_array_equal(value["value_target"][:, p - 1], [1.0, 0.0])
  # Policy targets only on the verified-correct trajectory.
  assert value["loss_mask"][0].sum() == len(good) + 1 and value["loss_mask"][1].sum() == 0

  orm = critic_data.critic_dataset("orm", tok, d, 48)
  for row in range(2):
    np.testing.assert_array_equal(np.flatnonzero(orm["value_mask"][row]), [eos])
  np.testing.assert_array_equal(orm["value_target"][:, eos], [1.0, 0.0])
  assert orm["loss_mask"].sum() == 0

  prm = critic_data.critic_dataset("prm", tok, d, 48, delimiter="\n")
  np.testing.assert_array_equal(np.flatnonzero(prm["value_mask"][1]), [p - 1] + step_ends + [eos])
  assert all(tok.decode([prm["tokens"][1, i]]) == "\n" for i in [p - 1] + step_ends)
  np.testing.assert_allclose(prm["value_target"][1, [p - 1] + step_ends + [eos]],
                             [0.5, 1.0, 0.25, 0.0])
  hard = critic_data.critic_dataset("prm", tok, d, 48, delimiter="\n", prm_label="hard",
                                prm_threshold=0.5)
  np.testing.assert_array_equal(hard["value_target"][1, [p - 1] + step_ends + [eos]],
                                [1.0, 1.0, 0.0, 0.0])
  np.testing.assert_array_equal(prm["tokens"], orm["tokens"])  # one layout for every kind

  with pytest.raises(ValueError, match="2 steps but 3 step targets"):
    data.encode_step_value_examples(tok, [prompt], ["1+1=2\nA: 2"], [[1, 1, 1]], 48, "\n")


def test_split_completion_matches_task_steps(arith):
  for c in ["2+3=5\n5*2=10\nA: 10", "2+3=5\n", "", "A: 1", "\n\nx"]:
    pieces = data.split_completion(c, "\n")
    assert "".join(pieces) == c and len(pieces) == len(arith.split_steps(c))


# ---------------------------------------------------------------------------
# Monte Carlo step labels.


class ScriptedSampler:
  """A ``SampleFn`` that answers each prompt from a script, in order of asking."""

  def __init__(self, script):
    self.script = {k: list(v) for k, v in script.items()}
    self.calls = []

  def __call__(self, prompts, rng, temperature):
    self.calls.append((list(prompts), temperature))
    return [self.script[p].pop(0) for p in prompts]


def test_prm_labels_equal_hand_computed_fractions(arith):
  prob = _problem(arith)
  q = arith.prompt(prob)
  wrong, right = "2+3=5\n5*2=11\nA: 11", "2+3=5\n5*2=10\nA: 10"
  sampler = ScriptedSampler({
      q: [wrong, right],
      # Both trajectories share the first step: its rollouts are sampled once.
      q + "2+3=5\n": ["5*2=10\nA: 10", "5*2=10\nA: 10", "5*2=11\nA: 11", "garbage"],
      q + "2+3=5\n5*2=11\n": ["A: 11", "A: 11", "A: 11", "A: 10"],
      q + "2+3=5\n5*2=10\n": ["A: 10", "A: 10", "A: 10", "A: 10"],
  })
  cfg = critics.CollectConfig(num_samples=2, mc_rollouts=4, temperature=0.8,
                              rollout_temperature=0.6)
  d = critic_data.collect_critic_data(arith, [prob], sampler, jax.random.key(0), cfg)
  np.testing.assert_array_equal(d.outcomes, [0.0, 1.0])
  np.testing.assert_array_equal(d.root_labels, [0.5, 0.5])
  np.testing.assert_allclose(d.step_labels[0], [2 / 4, 1 / 4, 0.0])
  np.testing.assert_allclose(d.step_labels[1], [2 / 4, 4 / 4, 1.0])
  assert d.stats == {"trajectories": 2, "rollouts": 12, "prefixes": 3}
  assert [t for _, t in sampler.calls] == [0.8, 0.6]
  assert len(sampler.calls[1][0]) == 12  # all rollouts in one batched call
  assert all(not v for v in sampler.script.values())
  np.testing.assert_array_equal(critic_data.hard_labels(d.step_labels[0], 0.5), [1, 0, 0])
  np.testing.assert_array_equal(critic_data.hard_labels(d.step_labels[0], 1 / 4), [1, 1, 0])


def test_collect_with_policy_sampler_runs_batched_rollouts(arith, tok):
  cfg = testing.tiny_config(num_layers=1)
  params = testing.random_params(cfg, scale=0.3)
  prob = _problem(arith)
  q = arith.prompt(prob)
  collect = critics.CollectConfig(num_samples=2, mc_rollouts=3, rollout_temperature=0.0,
                                  max_new_tokens=6, batch_size=8)
  policy = critic_data.PolicySampler.from_config(params, cfg, tok, collect)
  trajectories = ScriptedSampler({q: ["2+3=5\n5*2=11\nA: 11", "2+3=6\nA: 6"]})

  def sample(prompts, rng, temperature):
    return trajectories(prompts, rng, temperature) if not trajectories.calls else policy(
        prompts, rng, temperature)

  d = critic_data.collect_critic_data(arith, [prob], sample, jax.random.key(1), collect)
  assert d.stats["prefixes"] == 3 and policy.stats["rows"] == 9
  # Greedy rollouts are identical, so each MC fraction is exactly 0 or 1, and
  # equals the verdict on one greedy continuation decoded alone.
  for labels, c in zip(d.step_labels, d.completions):
    pieces = data.split_completion(c, "\n")
    assert len(labels) == len(pieces)
    for j, label in enumerate(labels[:-1]):
      prefix = "".join(pieces[:j + 1])
      # Alone: the prefix's greedy rollout, in the sampler's shape (no recompile).
      ids, mask = sampling.encode_prompts(tok, [q + prefix] * 8, length=32)
      out = sampling.generate(params, cfg, ids, mask, jax.random.key(0), max_new_tokens=6,
                              temperature=0.0, stop_tokens=jnp.array([tok.eos_id], jnp.int32))
      text = sampling.decode_completions(tok, out.tokens)[0]
      assert label == float(arith.verify(prob, prefix + text))


# ---------------------------------------------------------------------------
# Tool-augmented ORM.


def test_tool_orm_accepts_demos_and_rejects_wrong_steps(arith):
  countdown = get_task("countdown")
  for task in (arith, countdown):
    for prob in task.generate(3, 20):
      demo = task.demonstration(prob)
      assert critics.tool_orm_score(task, demo) == 1.0
      assert critics.tool_orm_score(task, demo, learned_score=0.7) == pytest.approx(0.7)
  assert critics.tool_orm_score(arith, "2+3=5\n5*2=11\nA: 11", learned_score=0.99) == 0.0
  assert critics.tool_orm_score(arith, "2+3=5\n5*2=10\nA: 10", learned_score=1.7) == 1.0
  assert critics.tool_orm_score(arith, "9/2=4\nA: 4") == 0.0          # inexact division
  assert critics.tool_orm_score(arith, "no arithmetic\nA: 3", 0.2) == pytest.approx(0.2)
  assert critics.tool_orm_score(arith, "1+1=2\n" * 2000) == 0.0       # over MAX_TOOL_CHARS


def test_gsm8k_annotations_are_checked_with_a_bounded_parser(arith):
  assert graders.check_annotation("48/2=24") and graders.check_annotation("12/60=0.2")
  assert graders.check_annotation("100-50-30-15=5") and graders.check_annotation("(2+3)*4=20")
  assert graders.check_annotation("10/3=3.33") and graders.check_annotation("2/3=0.67")
  assert graders.check_annotation("25*.01=.25") and graders.check_annotation("-2*3=-6")
  assert graders.check_annotation("2+3*4=20") is False               # precedence
  assert graders.check_annotation("10/3=3.34") is False              # neither rounded nor cut
  assert graders.check_annotation("10/3=3") is False                 # integers are exact
  for junk in ["1/0=1", "__import__('os')=1", "2**3=8", "a=3", "1=2=3", "(1+2=3", "9" * 200]:
    assert graders.check_annotation(junk) is None, junk
  assert graders.eval_rational("-(1+2)*(3-(4/8))") == -7.5
  assert graders.eval_rational("(" * 40 + "1" + ")" * 40) is None  # over the token cap
  wrong = "She sells 16 - 3 - 4 = <<16-3-4=8>>8 eggs.\n#### 8"
  assert critics.check_arithmetic(wrong) == (1, 1)
  assert critics.tool_orm_score(arith, wrong, learned_score=0.9) == 0.0
  if os.path.exists(GSM8K_TRAIN):  # Real annotations: all checkable ones are right.
    with open(GSM8K_TRAIN) as f:
      answers = [json.loads(line)["answer"] for _, line in zip(range(200), f)]
    checked = [critics.check_arithmetic(a) for a in answers]
    assert sum(c for c, _ in checked) > 300 and sum(w for _, w in checked) == 0


# ---------------------------------------------------------------------------
# Scoring and the shared trunk.


def test_shared_trunk_scores_equal_policy_value_head(tok):
  cfg = testing.tiny_config(num_layers=1)
  params = testing.random_params(cfg, scale=0.3)
  critic = critics.init_critic(critics.CriticConfig(shared_trunk=True, kind="prm"),
                               tok.vocab_size, jax.random.key(0), cfg, params)
  assert critic.shared_trunk and critic.params is params and critic.config == cfg
  prompts = ["Q: 1+2\n", "Q: ((3*4)-5)+6\n", "Q: 7\n"]
  completions = ["1+2=3\nA: 3", "3*4=12\n", ""]
  tokens, mask = critics.encode_for_scoring(tok, prompts, completions, 40)
  scores = np.asarray(critic(tokens, mask))
  # The policy's value head after each row's last token (EOS), from a plain forward pass.
  values = model_lib.Transformer(cfg).apply({"params": params}, jnp.asarray(tokens), None,
                                            jnp.asarray(mask)).values
  last = [len(tok.encode(p + c)) + 1 for p, c in zip(prompts, completions)]
  assert all(tokens[i, j] == tok.eos_id for i, j in enumerate(last))
  np.testing.assert_allclose(scores, np.asarray(values)[np.arange(3), last], rtol=1e-5,
                             atol=1e-6)
  row = [tok.bos_id] + tok.encode(prompts[0] + completions[0]) + [tok.eos_id]
  alone = model_lib.Transformer(cfg).apply({"params": params}, jnp.array([row])).values
  np.testing.assert_allclose(scores[0], alone[0, -1], rtol=1e-5, atol=1e-6)
  # The search's layout (left-padded prompt, then the completion, PAD after) scores the same.
  ids, pmask = sampling.encode_prompts(tok, prompts, length=20)
  comp = np.zeros((3, 16), np.int32)
  for i, c in enumerate(completions):
    comp[i, :len(c) + 1] = tok.encode(c) + [tok.eos_id]
  left = np.concatenate([ids, comp], 1)
  np.testing.assert_allclose(critic(left, left != 0), scores, rtol=1e-5, atol=1e-6)
  # As search critics, each function reads its own entry of the critic params.
  search, cparams = critics.search_critics(prm=critic)
  assert search.orm is None
  np.testing.assert_allclose(search.prm(cparams, tokens, mask), scores, rtol=1e-6)


# ---------------------------------------------------------------------------
# Training.


def _star_data(task, seed, n):
  """Demonstrations labelled by a learnable rule: 1.0 iff the solution multiplies."""
  problems = task.generate(seed, n)
  completions = [task.demonstration(p) for p in problems]
  return _data([task.prompt(p) for p in problems], completions,
               [float("*" in c) for c in completions])


def test_separate_critic_learns_a_learnable_labelling(tok):
  task = get_task("arithmetic", min_ops=2, max_ops=2)
  train_data, held_out = _star_data(task, 0, 256), _star_data(task, 1, 128)
  cfg = critics.CriticConfig(kind="orm", seq_len=40, model=dict(
      num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64))
  critic = critics.init_critic(cfg, tok.vocab_size, jax.random.key(0))
  assert not critic.shared_trunk and critic.config.max_len == 40
  eval_set = critic_data.critic_dataset("orm", tok, held_out, 40)
  before = critics.evaluate_critic(critic, eval_set)
  base_rate = float(held_out.outcomes.mean())
  assert 0.3 < base_rate < 0.7
  assert before["mse"] == pytest.approx(base_rate, abs=1e-6)  # zero-initialised head

  train_cfg = critics.CriticTrainConfig(steps=120, batch_size=32, learning_rate=3e-3,
                                        warmup_steps=10, checkpoint_every=40)
  critic, history = critics.train_critic(
      critic, critic_data.critic_dataset("orm", tok, train_data, 40), train_cfg,
      train.data_mesh(jax.devices()[:2]), seed=0)
  mse = [h["value_mse"] for h in history]
  assert len(mse) == 120 and np.mean(mse[-10:]) < 0.5 * np.mean(mse[:10]), mse
  after = critics.evaluate_critic(critic, eval_set)
  assert after["mse"] < 0.5 * before["mse"], after
  assert after["precision"] > base_rate + 0.2 and after["recall"] > 0.8, after
  assert after["ece"] < 0.2, after


def test_shared_trunk_training_resumes_exactly(tok, arith, tmp_path):
  cfg = testing.tiny_config(num_layers=1, embed_dim=16, head_dim=4, mlp_dim=32, max_len=32)
  policy = testing.random_params(cfg)
  critic = critics.init_critic(critics.CriticConfig(shared_trunk=True, kind="value"),
                               tok.vocab_size, jax.random.key(0), cfg, policy)
  problems = get_task("arithmetic", min_ops=1, max_ops=1).generate(5, 8)
  d = _data([arith.prompt(p) for p in problems], [arith.demonstration(p) for p in problems],
            [1.0, 0.0] * 4)
  dataset = critic_data.critic_dataset("value", tok, d, 32, policy_targets=True)
  train_cfg = critics.CriticTrainConfig(steps=4, batch_size=4, learning_rate=1e-2,
                                        warmup_steps=0, checkpoint_every=2)
  mesh = train.data_mesh(jax.devices()[:2])
  ckpt = tmp_path / "ckpt"
  full, history = critics.train_critic(critic, dataset, train_cfg, mesh, ckpt_dir=str(ckpt))
  assert full.shared_trunk and [h["step"] for h in history] == [1, 2, 3, 4]
  assert all(h["tokens"] > 0 for h in history)  # the policy anchor term sees targets
  # A shared trunk moves the policy's own parameters, not only the head.
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       full.params, policy)
  assert moved["embed"]["embedding"] > 0 and moved["value_head"]["kernel"] > 0
  # Lose the last checkpoint: the rerun resumes from step 2 and ends where the full run did.
  shutil.rmtree(ckpt / "4")
  resumed, history = critics.train_critic(critic, dataset, train_cfg, mesh, ckpt_dir=str(ckpt))
  assert [h["step"] for h in history] == [3, 4]
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Finished: a third call trains nothing and returns the same parameters.
  again, history = critics.train_critic(critic, dataset, train_cfg, mesh, ckpt_dir=str(ckpt))
  assert history == []
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_critic_config_round_trip_and_errors():
  cfg = critics.default_critic_config()
  cfg.kind = "prm"
  cfg.collect.mc_rollouts = 8
  c = critics.CriticConfig.from_config(cfg)
  assert c.kind == "prm" and c.collect.mc_rollouts == 8 and c.train.policy_coef == "auto"
  assert critics._policy_coef(c.train, shared_trunk=True) == critics.SHARED_TRUNK_POLICY_COEF
  assert critics._policy_coef(c.train, shared_trunk=False) == 0.0
  with pytest.raises(ValueError, match="kind"):
    critics.CriticConfig(kind="judge")
  with pytest.raises(ValueError, match="unknown keys"):
    critics.CriticConfig.from_config({"collect": {"rollouts": 2}})
  with pytest.raises(ValueError, match="step labels"):
    critic_data.critic_dataset("prm", CharTokenizer(), _data(["Q\n"], ["A: 1"], [1.0]), 16)
