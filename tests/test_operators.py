"""Policy-improvement operators against hand-computed values (alphallm.operators).

Most objectives are checked on a 2-token toy: a one-step "policy" given by two
logits theta, log pi = log_softmax(theta), so every loss and gradient has a
closed form written out in the test. The real tiny Transformer checks the
wrappers that take (params, batch).
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphallm import data
from alphallm import decoding
from alphallm import operators
from alphallm import sampling
from alphallm import testing
from alphallm import train_core
from alphallm.operators import base, distill, dpo, grpo, rft, sft
from alphallm.operators import tree as tree_lib
from alphallm.search import export, mcts, selection
from alphallm.tokenizer import CharTokenizer

LN2 = math.log(2.0)
TOK = CharTokenizer()


def sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------------------
# base


def test_token_logprobs_from_logits_by_hand():
  # V = 2; position 0 predicts token 1 with p = 3/4, position 1 predicts token 0 with p = 3/4.
  logits = jnp.array([[[0.0, math.log(3.0)], [math.log(3.0), 0.0], [0.0, 0.0]]])
  tokens = jnp.array([[0, 1, 0]])
  full = base.token_logprobs_from_logits(logits, tokens, jnp.array([[0.0, 1.0, 1.0]]))
  np.testing.assert_allclose(full, [[math.log(0.75), math.log(0.75)]], rtol=1e-6)
  last = base.token_logprobs_from_logits(logits, tokens, jnp.array([[0.0, 0.0, 1.0]]))
  np.testing.assert_allclose(last, [[0.0, math.log(0.75)]], rtol=1e-6)


def test_sequence_logprobs_match_the_sft_loss_sums():
  cfg = testing.tiny_config()
  params = testing.random_params(cfg, seed=3, scale=0.5)
  batch = data.encode_examples(TOK, ["1+2=", "7*3="], ["3", "21"], 16)
  seq = base.sequence_logprobs(params, cfg, batch["tokens"], batch["token_mask"],
                               batch["loss_mask"])
  sums = train_core.loss_sums(params, cfg, {k: jnp.asarray(v) for k, v in batch.items()})
  np.testing.assert_allclose(-seq.sum(), sums["nll_sum"], rtol=1e-5)
  loss, metrics = sft.sft_batch_loss(params, cfg, batch)
  np.testing.assert_allclose(loss, sums["nll_sum"] / sums["tokens"], rtol=1e-5)
  assert float(metrics["tokens"]) == float(sums["tokens"]) == 5.0   # "3"+EOS, "21"+EOS


def test_registry_names_every_operator_and_rejects_unknown():
  assert sorted(base.OPERATORS) == ["distill", "dpo", "grpo", "rft", "sft"]
  for name, op in base.OPERATORS.items():
    assert op.doc and operators.module_of(name).__name__ == op.module
  with pytest.raises(ValueError, match="'ppo'.*known"):
    base.get_operator("ppo")


def test_masked_mean_is_global_over_a_mesh_axis():
  x, m = jnp.arange(8.0).reshape(4, 2), jnp.array([[1, 1], [1, 0], [0, 0], [1, 1]], jnp.float32)
  want = float((x * m).sum() / m.sum())
  shards = jax.vmap(lambda a, b: base.masked_mean(a, b, "d"), axis_name="d")(
      x.reshape(4, 1, 2), m.reshape(4, 1, 2))
  np.testing.assert_allclose(shards.sum(), want, rtol=1e-6)
  np.testing.assert_allclose(base.masked_mean(x, m), want, rtol=1e-6)


# ---------------------------------------------------------------------------
# DPO


def _toy_dpo(theta, beta, ref=jnp.log(jnp.array([0.5, 0.5]))):
  """Chosen = token 0, rejected = token 1 of a one-step policy log_softmax(theta)."""
  logp = jax.nn.log_softmax(theta)
  return dpo.dpo_loss(logp[None, 0], logp[None, 1], ref[None, 0], ref[None, 1], beta)[0]


def test_dpo_policy_equal_reference_is_log2_and_gradient_by_hand():
  beta = 0.5
  theta = jnp.zeros(2)
  np.testing.assert_allclose(_toy_dpo(theta, beta), LN2, rtol=1e-6)
  # L = softplus(-beta (theta0 - theta1)): dL/dtheta0 = -beta sigmoid(0) = -beta / 2.
  g = jax.grad(_toy_dpo)(theta, beta)
  np.testing.assert_allclose(g, [-beta / 2, beta / 2], rtol=1e-6)


def test_dpo_loss_by_hand():
  # margin = 0.5 * ((-1 + 1.5) - (-2 + 1.5)) = 0.5; loss = log(1 + e^-0.5).
  loss, m = dpo.dpo_loss(jnp.array([-1.0]), jnp.array([-2.0]), jnp.array([-1.5]),
                         jnp.array([-1.5]), beta=0.5)
  np.testing.assert_allclose(loss, math.log1p(math.exp(-0.5)), rtol=1e-6)
  np.testing.assert_allclose(m["margin"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(m["chosen_reward"], 0.25, rtol=1e-6)
  np.testing.assert_allclose(m["rejected_reward"], -0.25, rtol=1e-6)
  assert float(m["reward_accuracy"]) == 1.0
  g = jax.grad(lambda c: dpo.dpo_loss(c, jnp.array([-2.0]), jnp.array([-1.5]),
                                      jnp.array([-1.5]), 0.5)[0])(jnp.array([-1.0]))
  np.testing.assert_allclose(g, [-0.5 * sigmoid(-0.5)], rtol=1e-6)   # chosen logp goes up


def test_dpo_weight_drops_padding_pairs():
  loss, m = dpo.dpo_loss(jnp.array([-1.0, 5.0]), jnp.array([-2.0, -9.0]), jnp.array([-1.5, 0.0]),
                         jnp.array([-1.5, 0.0]), 0.5, weight=jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(loss, math.log1p(math.exp(-0.5)), rtol=1e-6)
  assert float(m["pairs"]) == 1.0


def _tree(values_root, texts_root, child_texts=(), values_child=(), absorbing=()):
  """A TreeArrays-like tree: root 0 with children 1.., node 1 with the next children."""
  kids_root = len(texts_root)
  n = 1 + kids_root + len(child_texts)
  a = max(kids_root, len(child_texts), 1)
  c = 32
  parents = np.full((1, n), -1)
  action = np.full((1, n), -1)
  children = np.full((1, n, a), -1)
  visits = np.zeros((1, n, a), np.int32)
  q = np.zeros((1, n, a), np.float32)
  tokens = np.zeros((1, n, c), np.int32)
  length = np.zeros((1, n), np.int32)

  def add(parent, slot, node, text, value):
    parents[0, node], action[0, node], children[0, parent, slot] = parent, slot, node
    visits[0, parent, slot], q[0, parent, slot] = 2, value
    prefix = list(tokens[0, parent, :length[0, parent]])
    ids = prefix + TOK.encode(text)
    tokens[0, node, :len(ids)], length[0, node] = ids, len(ids)

  for i, (t, v) in enumerate(zip(texts_root, values_root)):
    add(0, i, 1 + i, t, v)
  for i, (t, v) in enumerate(zip(child_texts, values_child)):
    add(1, i, 1 + kids_root + i, t, v)
  absorb = np.zeros((1, n), bool)
  absorb[0, list(absorbing)] = True
  return types.SimpleNamespace(
      parents=parents, action_from_parent=action, children_index=children,
      children_visits=visits, child_valid=children >= 0, absorbing=absorb, qvalues=q,
      tokens=tokens, length=length, terminal=np.zeros((1, n), bool))


def test_pairs_from_tree_respect_the_gap_and_never_pair_a_node_with_itself():
  t = _tree([0.9, 0.5, 0.85], ["1+1=2\n", "1+1=3\n", "2*1=2\n"], ["2+2=4\n", "2+2=5\n"],
            [0.3, 0.3])
  best = dpo.pairs_from_tree(t, 0, "Q: ", TOK, min_gap=0.3)
  assert [(p.chosen, p.rejected, round(p.gap, 4)) for p in best] == [("1+1=2\n", "1+1=3\n", 0.4)]
  assert best[0].prompt == "Q: " and best[0].node == 0
  many = dpo.pairs_from_tree(t, 0, "Q: ", TOK, min_gap=0.3, max_pairs_per_node=5)
  assert [(p.chosen, p.rejected) for p in many] == [("1+1=2\n", "1+1=3\n"),
                                                    ("2*1=2\n", "1+1=3\n")]
  assert not dpo.pairs_from_tree(t, 0, "Q: ", TOK, min_gap=0.41)
  # Equal values at node 1 give no pair even at gap 0; node 1's prefix is its own step.
  zero = dpo.pairs_from_tree(t, 0, "Q: ", TOK, min_gap=0.0, max_pairs_per_node=10)
  assert all(p.node == 0 and p.chosen != p.rejected for p in zero) and len(zero) == 3
  t2 = _tree([0.9, 0.5], ["1+1=2\n", "1+1=3\n"], ["2+2=4\n", "2+2=5\n"], [0.9, 0.1])
  deep = [p for p in dpo.pairs_from_tree(t2, 0, "Q: ", TOK, 0.5) if p.node == 1]
  assert deep and deep[0].prompt == "Q: 1+1=2\n" and deep[0].chosen == "2+2=4\n"


def test_pairs_skip_identical_texts_and_absorbing_children():
  same = _tree([0.9, 0.1], ["x\n", "x\n"])
  assert not dpo.pairs_from_tree(same, 0, "", TOK, 0.1)
  dummy = _tree([0.9, 0.1], ["a\n", "b\n"], absorbing=[2])
  assert not dpo.pairs_from_tree(dummy, 0, "", TOK, 0.1)


def test_sibling_groups_round_trip_through_a_record():
  t = _tree([0.9, 0.5], ["1+1=2\n", "1+1=3\n"])
  groups = tree_lib.sibling_groups(t, 0, TOK)
  record = {"prompt": "Q: ", "extra": {"sibling_groups": tree_lib.groups_to_json(groups)}}
  assert tree_lib.groups_from_json(record["extra"]["sibling_groups"]) == groups
  assert dpo.pairs_from_record(record, 0.3) == dpo.pairs_from_groups("Q: ", groups, 0.3)
  assert dpo.pairs_from_record({"prompt": "Q: "}, 0.3) == []
  bad = tree_lib.groups_to_json(groups)
  bad[0]["values"] = [0.9, "high"]
  with pytest.raises(ValueError, match=r"sibling_groups\[0\].*'values'"):
    dpo.pairs_from_record({"prompt": "", "extra": {"sibling_groups": bad}}, 0.3)


def test_dpo_on_the_tiny_transformer_starts_at_log2_and_moves_the_right_way():
  cfg = testing.tiny_config()
  params = testing.random_params(cfg, seed=1, scale=0.3)
  pairs = [dpo.PreferencePair("1+1=", "2\n", "3\n", 0.5, False, False),
           dpo.PreferencePair("2+2=", "4", "5", 0.5, True, True)]
  batch = {k: jnp.asarray(v) for k, v in dpo.encode_pairs(TOK, pairs, 16).items()}
  assert int(batch["chosen_loss_mask"][1].sum()) == 2          # "4" + EOS on a terminal step
  loss_fn = jax.jit(lambda p, b: dpo.dpo_batch_loss(p, cfg, b, 0.1, ref_params=params))
  loss, _ = loss_fn(params, batch)
  np.testing.assert_allclose(loss, LN2, rtol=1e-5)
  grads = jax.grad(lambda p: loss_fn(p, batch)[0])(params)
  # A small descent step widens the margin: policy-minus-reference log-ratio of the chosen
  # step rises relative to the rejected one (DPO moves the difference, not each side).
  stepped = jax.tree.map(lambda p, g: p - 1e-2 * g, params, grads)
  batch_ref = dict(batch, **dpo.reference_logprobs(params, cfg, batch))
  loss2, m2 = dpo.dpo_batch_loss(stepped, cfg, batch_ref, 0.1)   # precomputed reference
  assert float(loss2) < LN2 and float(m2["margin"]) > 0
  one = {k: v[:1] for k, v in batch.items()}
  g1 = jax.grad(lambda p: dpo.dpo_batch_loss(p, cfg, one, 0.1, ref_params=params)[0])(params)
  s1 = jax.tree.map(lambda p, g: p - 1e-2 * g, params, g1)
  _, m1 = dpo.dpo_batch_loss(s1, cfg, one, 0.1, ref_params=params)
  assert float(m1["reward_accuracy"]) == 1.0


def test_implicit_reward_critic_is_zero_at_the_reference_and_scores_the_completion():
  cfg = testing.tiny_config()
  p0 = testing.random_params(cfg, seed=1, scale=0.3)
  p1 = testing.random_params(cfg, seed=2, scale=0.3)
  prompt_len = 6
  # Search rows: a left-padded prompt in [0, 6), the completion after, PAD at the end.
  rows = [[0, 0, 1] + TOK.encode("1+1") + TOK.encode("=2") + [0],
          [0, 1] + TOK.encode("12+3") + TOK.encode("=15") + [0]]
  tokens = jnp.array([r + [0] * (10 - len(r)) for r in rows], jnp.int32)
  mask = tokens != 0
  critic = jax.jit(dpo.implicit_reward_critic(cfg, beta=0.5, prompt_len=prompt_len))
  np.testing.assert_allclose(critic({"policy": p0, "reference": p0}, tokens, mask), 0.0,
                             atol=1e-6)
  got = critic({"policy": p1, "reference": p0}, tokens, mask)
  target = dpo.completion_mask(mask, prompt_len)
  want = 0.5 * (base.sequence_logprobs(p1, cfg, tokens, mask, target)
                - base.sequence_logprobs(p0, cfg, tokens, mask, target))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert np.all(np.abs(np.asarray(got)) > 1e-4)
  assert int(target.sum()) == 5                                  # "=2" + "=15"
  squashed = dpo.implicit_reward_critic(cfg, 0.5, prompt_len, squash=True)(
      {"policy": p1, "reference": p0}, tokens, mask)
  np.testing.assert_allclose(squashed, jax.nn.sigmoid(want), rtol=1e-5)


# ---------------------------------------------------------------------------
# GRPO


def test_group_advantages_by_hand_and_the_degenerate_group():
  adv = grpo.group_advantages(jnp.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
  # Row 0: mean 0.5, std 0.5 -> +-1 (up to eps); row 1: all equal -> exactly 0.
  np.testing.assert_allclose(adv[0], [1.0, -1.0, -1.0, 1.0], rtol=1e-5)
  assert np.all(np.asarray(adv[1]) == 0.0)


def _toy_grpo(theta, advantages, ref_theta=None, old_theta=None, kl_coef=0.0, clip_eps=0.2):
  """Two one-token samples: sample 0 wrote token 0, sample 1 token 1."""
  logp = jax.nn.log_softmax(theta)
  old = jax.nn.log_softmax(theta if old_theta is None else old_theta)
  old = jax.lax.stop_gradient(old)
  ref = jax.nn.log_softmax(theta if ref_theta is None else ref_theta)
  ref = jax.lax.stop_gradient(ref)
  col = lambda x: jnp.stack([x[0], x[1]])[:, None]  # noqa: E731  [2 samples, 1 token]
  return grpo.grpo_loss(col(logp), col(old), col(ref), advantages, jnp.ones((2, 1)), clip_eps,
                        kl_coef)[0]


def test_grpo_positive_advantage_token_goes_up_by_hand():
  # At theta = 0, ratio 1: L = -(A0 rho0 + A1 rho1) / 2, d log p0 / d theta0 = 1/2,
  # d log p1 / d theta0 = -1/2, so dL/dtheta0 = -(1 * 1/2 + (-1)(-1/2)) / 2 = -1/2.
  adv = jnp.array([1.0, -1.0])
  theta = jnp.zeros(2)
  np.testing.assert_allclose(_toy_grpo(theta, adv), 0.0, atol=1e-7)
  np.testing.assert_allclose(jax.grad(_toy_grpo)(theta, adv), [-0.5, 0.5], rtol=1e-6)


def test_grpo_all_equal_rewards_give_zero_policy_gradient():
  adv = grpo.group_advantages(jnp.array([[1.0, 1.0]]))[0]
  theta = jnp.array([0.3, -0.2])
  g = jax.grad(_toy_grpo)(theta, adv, old_theta=jnp.array([0.0, 0.1]))
  assert np.all(np.asarray(g) == 0.0)
  # The KL term at the reference has zero gradient too (d k3 / d log pi = 1 - pi_ref/pi = 0).
  g_kl = jax.grad(_toy_grpo)(theta, adv, kl_coef=1.0)
  np.testing.assert_allclose(g_kl, 0.0, atol=1e-7)


def test_grpo_kl_term_pulls_toward_the_reference():
  theta, ref = jnp.array([1.0, 0.0]), jnp.zeros(2)
  g = jax.grad(_toy_grpo)(theta, jnp.zeros(2), ref_theta=ref, kl_coef=1.0)
  assert float(g[0]) > 0 > float(g[1])       # descent lowers theta0: toward the uniform reference


def test_grpo_clip_and_k3_by_hand():
  # Sample 0: A = +1, rho = 0.75/0.5 = 1.5 -> clipped to 1.2. Sample 1: A = -1, rho = 1.5 ->
  # min(-1.5, -1.2) = -1.5 (the pessimistic side is not clipped).
  logp = jnp.log(jnp.array([[0.75], [0.75]]))
  old = jnp.log(jnp.array([[0.5], [0.5]]))
  ref = jnp.log(jnp.array([[0.375], [0.75]]))
  # k3 for sample 0: d = log(0.375/0.75) = -ln 2 -> 0.5 + ln 2 - 1; sample 1: 0.
  k3 = 0.5 + LN2 - 1.0
  loss, m = grpo.grpo_loss(logp, old, ref, jnp.array([1.0, -1.0]), jnp.ones((2, 1)), 0.2, 0.1)
  want = -((1.2 - 0.1 * k3) + (-1.5 - 0.0)) / 2
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(m["kl"], k3 / 2, rtol=1e-5)
  assert float(m["clip_fraction"]) == 1.0


def test_grpo_sequence_mean_versus_token_mean():
  # Sample 0 has 2 tokens with per-token loss -1 each (A = 1, rho = 1), sample 1 one token with
  # +1 (A = -1): sequence mean = (-1 + 1) / 2 = 0, token mean = (-2 + 1) / 3.
  z = jnp.zeros((2, 2))
  mask = jnp.array([[1.0, 1.0], [1.0, 0.0]])
  seq, _ = grpo.grpo_loss(z, z, z, jnp.array([1.0, -1.0]), mask, kl_coef=0.0)
  tok, _ = grpo.grpo_loss(z, z, z, jnp.array([1.0, -1.0]), mask, kl_coef=0.0, token_mean=True)
  np.testing.assert_allclose(seq, 0.0, atol=1e-7)
  np.testing.assert_allclose(tok, -1.0 / 3.0, rtol=1e-6)


def test_grpo_on_the_tiny_transformer_raises_the_rewarded_completion():
  cfg = testing.tiny_config()
  params = testing.random_params(cfg, seed=4)
  enc = data.encode_examples(TOK, ["1+1=", "1+1="], ["2", "3"], 12)
  batch = {k: jnp.asarray(v) for k, v in enc.items()}
  batch["advantages"] = grpo.group_advantages(jnp.array([[1.0, 0.0]]))[0]
  loss_fn = lambda p: grpo.grpo_batch_loss(p, cfg, batch, ref_params=params)[0]  # noqa: E731
  np.testing.assert_allclose(loss_fn(params), 0.0, atol=1e-6)   # rho = 1, A sums to 0, KL 0
  descent = jax.tree.map(lambda g: -g, jax.grad(loss_fn)(params))
  seq = lambda p: base.sequence_logprobs(p, cfg, batch["tokens"], batch["token_mask"],  # noqa
                                         batch["loss_mask"])
  # The directional derivative along the descent direction: up for A > 0, down for A < 0.
  _, rate = jax.jvp(seq, (params,), (descent,))
  assert float(rate[0]) > 0 > float(rate[1])


# ---------------------------------------------------------------------------
# RFT


def test_rft_keeps_only_verified_dedupes_and_caps():
  rows = rft.select_verified(
      ["p1", "p2", "p3"],
      [["a", "b", "a ", "c", "d"], ["x", "y"], ["z"]],
      [[True, False, True, True, True], [False, False], [True]], max_per_prompt=2)
  assert rows == [("p1", "a"), ("p1", "c"), ("p3", "z")]
  uncapped = rft.select_verified(["p"], [["a", "b", "a"]], [[True, True, True]])
  assert uncapped == [("p", "a"), ("p", "b")]
  with pytest.raises(ValueError, match="prompt 0 has 2 samples but 1 labels"):
    rft.select_verified(["p"], [["a", "b"]], [[True]])
  assert rft.rft_dataset(TOK, [], 16) is None
  ds = rft.rft_dataset(TOK, rows, 16)
  assert ds["tokens"].shape == (3, 16)


def test_rft_flop_matching_by_hand():
  # 2 x 100 params x (10 + 30) tokens = 8,000 FLOPs a sample; a 33,000-FLOP search buys 4.
  assert rft.sample_flops(100, 10, 30) == 8000.0
  assert rft.samples_matching_flops(33000.0, 100, 10, 30) == 4
  assert rft.samples_matching_flops(32000.0, 100, 10, 30) == 4
  assert rft.samples_matching_flops(100.0, 100, 10, 30) == 1
  with pytest.raises(ValueError, match="search_flops_per_problem"):
    rft.samples_matching_flops(float("nan"), 100, 10, 30)


def test_rft_flop_matching_agrees_with_the_multi_sampler_accounting():
  cfg = testing.tiny_config()
  params = testing.random_params(cfg, seed=5, scale=0.3)
  n = 3
  sampler = decoding.make_multi_sampler(cfg, n, max_new_tokens=6, eos_id=TOK.eos_id)
  ids = jnp.array([[1] + TOK.encode("1+1=")], jnp.int32)
  out = sampler(params, ids, jnp.ones_like(ids, bool), jax.random.key(0))
  mean_len = float(out.tokens[0]) / n
  got = rft.samples_matching_flops(float(out.flops[0]), decoding.param_count(params),
                                   ids.shape[1], mean_len)
  assert got == n


# ---------------------------------------------------------------------------
# Distillation


def test_visit_targets_and_rows_at_every_node():
  np.testing.assert_allclose(distill.visit_targets([3, 1]), [0.75, 0.25])
  np.testing.assert_allclose(distill.visit_targets([3, 1], temperature=0.5), [0.9, 0.1])
  t = _tree([0.9, 0.5], ["1+1=2\n", "1+1=3\n"], ["2+2=4\n", "2+2=5\n"], [0.9, 0.1])
  t.children_visits[0, 0] = [3, 1]
  t.children_visits[0, 1] = [1, 1]
  rows = distill.rows_from_tree(t, 0, "Q: ", TOK)
  assert [(r.prompt, r.option, r.weight) for r in rows] == [
      ("Q: ", "1+1=2\n", 0.75), ("Q: ", "1+1=3\n", 0.25),
      ("Q: 1+1=2\n", "2+2=4\n", 0.5), ("Q: 1+1=2\n", "2+2=5\n", 0.5)]
  groups = tree_lib.sibling_groups(t, 0, TOK)
  given = distill.rows_from_groups("Q: ", groups, targets={0: [1.0, 3.0], 1: [0.0, 2.0]})
  assert [(r.node, r.weight) for r in given] == [(0, 0.25), (0, 0.75), (1, 1.0)]
  with pytest.raises(ValueError, match="node 1"):
    distill.rows_from_groups("Q: ", groups, targets={0: [1.0, 1.0]})


def test_distill_loss_by_hand_and_gradient_toward_the_target():
  loss, m = distill.distill_loss(jnp.array([-1.0, -2.0, -4.0]), jnp.array([0.75, 0.25, 1.0]))
  np.testing.assert_allclose(loss, (0.75 * 1 + 0.25 * 2 + 4.0) / 2.0, rtol=1e-6)
  assert float(m["nodes"]) == 2.0
  # Two options of one node under a 2-token toy: H(pi_hat, softmax(theta)), minimised at pi_hat.
  target = jnp.array([0.75, 0.25])
  f = lambda th: distill.distill_loss(jax.nn.log_softmax(th), target)[0]  # noqa: E731
  np.testing.assert_allclose(jax.grad(f)(jnp.zeros(2)), [-0.25, 0.25], rtol=1e-6)
  np.testing.assert_allclose(jax.grad(f)(jnp.log(target)), 0.0, atol=1e-6)


def test_distill_rows_encode_as_weighted_sft_rows():
  cfg = testing.tiny_config()
  params = testing.random_params(cfg, seed=6, scale=0.3)
  rows = [distill.DistillRow("1+1=", "2\n", 0.75, False),
          distill.DistillRow("1+1=", "3", 0.25, True)]
  batch = distill.encode_rows(TOK, rows, 12, scale=2.0)
  np.testing.assert_allclose(batch["weight"], [1.5, 0.5])
  np.testing.assert_allclose(batch["loss_mask"].sum(1), [1.5 * 2, 0.5 * 2])  # "2\n"; "3"+EOS
  loss, _ = distill.distill_batch_loss(params, cfg, batch)
  seq = base.sequence_logprobs(params, cfg, batch["tokens"], batch["token_mask"],
                               batch["loss_mask"])
  np.testing.assert_allclose(loss, -(1.5 * seq[0] + 0.5 * seq[1]) / 2.0, rtol=1e-5)


# ---------------------------------------------------------------------------
# A real eta-MCTS tree, with DPO's implicit reward as its PRM critic.


def test_a_real_search_scored_by_the_implicit_reward_gives_pairs_and_node_rows():
  cfg = testing.tiny_config()
  policy = testing.random_params(cfg, seed=1, scale=0.3)
  reference = testing.random_params(cfg, seed=2, scale=0.3)
  ids, mask = (jnp.asarray(x) for x in sampling.encode_prompts(TOK, ["Q: 1+2\n", "Q: 7\n"]))
  sc = mcts.default_search_config()
  sc.num_simulations, sc.max_option_len, sc.max_completion_len = 8, 5, 15
  sc.adaptive_branching.enabled = True
  sc.adaptive_branching.c_min_root, sc.adaptive_branching.c_max_root = 3, 3
  critic = dpo.implicit_reward_critic(cfg, beta=0.1, prompt_len=ids.shape[1], squash=True)
  search = mcts.make_search(cfg, sc, TOK.eos_id, TOK.token_ids_ending_with("\n"),
                            mcts.Critics(prm=critic))
  out = search(policy, ids, mask, jax.random.key(0), {"policy": policy, "reference": reference})
  t = selection.TreeArrays(out)
  groups = tree_lib.sibling_groups(t, 0, TOK)
  assert groups and groups[0].node == 0 and len(groups[0].options) >= 2
  for g in groups:
    for child, option in zip(g.children, g.options):
      assert int(t.parents[0, child]) == g.node
      assert option == export.option_text(t, 0, child, TOK).replace("<eos>", "")
  pairs = dpo.pairs_from_tree(t, 0, "Q: 1+2\n", TOK, min_gap=0.0, max_pairs_per_node=99)
  assert pairs and all(p.gap > 0 and p.chosen != p.rejected for p in pairs)
  rows = distill.rows_from_tree(t, 0, "Q: 1+2\n", TOK, min_weight=0.0)
  by_node = {}
  for r in rows:
    by_node[r.node] = by_node.get(r.node, 0.0) + r.weight
  np.testing.assert_allclose(list(by_node.values()), 1.0, rtol=1e-6)
