"""Properties of eta-MCTS (alphallm.search): correctness, masking, accounting, export."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphallm import decoding
from alphallm import methods as methods_lib
from alphallm import sampling
from alphallm import testing
from alphallm.search import beam
from alphallm.search import export
from alphallm.search import mcts
from alphallm.search import options
from alphallm.search import selection
from alphallm.tasks import Problem, get_task
from alphallm.tokenizer import CharTokenizer

TOK = CharTokenizer()
DELIM = TOK.token_ids_ending_with("\n")
ANSWER = TOK.encode("A: ")
PROMPTS = ["Q: 1+2\n", "Q: ((3*4)-5)+6\n", "Q: 7\n"]


@pytest.fixture(scope="module")
def model():
  cfg = testing.tiny_config()
  return cfg, testing.random_params(cfg, scale=0.3)


@pytest.fixture(scope="module")
def prompts():
  ids, mask = sampling.encode_prompts(TOK, PROMPTS)
  return jnp.asarray(ids), jnp.asarray(mask)


def _config(**kw):
  sc = mcts.default_search_config()
  sc.num_simulations = 10
  sc.max_option_len = 5
  sc.max_completion_len = 15
  for key, value in kw.items():
    node = sc
    *path, last = key.split("__")
    for k in path:
      node = node[k]
    node[last] = value
  return sc


# eta-MCTS features: adaptive branching and same-step merge (fast rollouts: see puct_search).
FULL = dict(adaptive_branching__enabled=True, adaptive_branching__alpha=1.0,
            adaptive_branching__c_min_root=2, adaptive_branching__c_max_root=4,
            adaptive_branching__c_min=1, adaptive_branching__c_max=3,
            merge__enabled=True)
IGNORED = mcts.same_step_token_ids(TOK, " ")
_CRIT_PARAMS = None   # the critics below ignore their params


def _bandit_reward(params, tokens, mask):
  """A critic that prefers even token ids (a deterministic function of the text)."""
  del params
  even = ((tokens % 2) == 0) & mask & (tokens > 2)
  return even.sum(1) / jnp.maximum(mask.sum(1), 1)


@pytest.fixture(scope="module")
def full_search(model, prompts):
  cfg, params = model
  sc = mcts.SearchConfig.from_config(_config(**FULL))
  search = mcts.make_search(cfg, sc, TOK.eos_id, DELIM, mcts.Critics(prm=_bandit_reward),
                            answer_prefix_ids=ANSWER, same_step_ignored_ids=IGNORED)
  before = mcts.num_traces(sc)
  out = search(params, *prompts, jax.random.key(0), _CRIT_PARAMS)
  return sc, search, out, before


@pytest.fixture(scope="module")
def puct_search(model, prompts):
  """PUCT, with an external PRM critic and fast rollouts by a separate, smaller policy."""
  cfg, params = model
  small = testing.tiny_config(num_layers=1, embed_dim=16, mlp_dim=32)
  sc = _config(policy="puct", rollout__enabled=True, rollout__num_rollouts=2,
               rollout__max_len=4, **FULL)
  critics = mcts.Critics(prm=_bandit_reward)
  search = mcts.make_search(cfg, sc, TOK.eos_id, DELIM, critics, answer_prefix_ids=ANSWER,
                            rollout_model_config=small)
  return search(params, *prompts, jax.random.key(1),
                rollout_params=testing.random_params(small, seed=3))


def _real_nodes(out):
  e = out.tree.embeddings
  real = ~np.asarray(e.absorbing)
  real[:, 0] = True
  return real


# ----------------------------------------------------------------------------
# Primitives.


def _levenshtein(a, b):
  d = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    prev, d[0] = d[0], i
    for j, y in enumerate(b, 1):
      prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
  return d[-1]


def test_edit_distance_matches_reference():
  rng = np.random.default_rng(0)
  o = 7
  a = rng.integers(3, 6, size=(64, o)).astype(np.int32)
  b = rng.integers(3, 6, size=(64, o)).astype(np.int32)
  la, lb = rng.integers(0, o + 1, 64), rng.integers(0, o + 1, 64)
  got = jax.jit(jax.vmap(options.edit_distance))(a, la, b, lb)
  want = [_levenshtein(list(x[:i]), list(y[:j])) for x, i, y, j in zip(a, la, b, lb)]
  np.testing.assert_array_equal(np.asarray(got), want)


def test_merge_keeps_distant_siblings_and_counts_multiplicity():
  toks = jnp.array([[5, 6, 7, 0], [5, 6, 7, 0], [5, 6, 8, 0], [9, 9, 9, 9], [5, 6, 7, 0]])
  lens = jnp.array([3, 3, 3, 4, 3])
  valid = jnp.array([True, True, True, True, False])
  keep, counts = options.merge_candidates(toks, lens, valid, None)     # de-duplication only
  assert keep.tolist() == [True, False, True, True, False]
  assert counts.tolist() == [2, 0, 1, 1, 0]
  keep, counts = options.merge_candidates(toks, lens, valid, 1)        # edit distance <= 1
  assert keep.tolist() == [True, False, False, True, False]
  assert counts.tolist() == [3, 0, 0, 1, 0]
  prior = options.prior_logits("count", keep, counts, jnp.zeros(5), lens)
  np.testing.assert_allclose(jax.nn.softmax(prior), [0.75, 0, 0, 0.25, 0], atol=1e-6)
  logprob = jnp.array([-3.0, -3.0, -1.0, -2.0, -1.0])
  prior = options.prior_logits("logprob", keep, counts, logprob, lens)
  np.testing.assert_allclose(prior, [-1.0, options.MASKED_LOGIT, options.MASKED_LOGIT, -0.5,
                                     options.MASKED_LOGIT])


def test_branching_factor_formula():
  f = lambda v, cands, alpha, lo, hi: int(options.branching_factor(  # noqa: E731
      jnp.float32(v), jnp.array(cands, jnp.float32), jnp.ones(len(cands), bool), alpha, lo, hi))
  assert f(0.0, [0.1, -0.2], 1.0, 1, 5) == 1          # floor(0.2) + 1
  assert f(0.0, [2.5, -0.2], 1.0, 1, 5) == 3          # floor(2.5) + 1
  assert f(0.0, [9.0], 1.0, 1, 5) == 5                # capped at c_max
  assert f(0.0, [0.0], 1.0, 2, 5) == 2                # at least c_min
  assert options.keep_first(jnp.array([1, 0, 1, 1], bool), 2).tolist() == [True, False, True,
                                                                            False]


def test_option_termination():
  toks = jnp.array([[7, 8, 2, 0], [7, 8, 3, 0], [*ANSWER, 9][:4], [7, 0, 0, 0]])
  lens = jnp.array([3, 3, 4, 1])
  got = options.option_is_terminal(toks, lens, TOK.eos_id, jnp.array(ANSWER))
  assert got.tolist() == [True, False, True, False]


def test_config_is_hashable_and_validated():
  cfg = mcts.SearchConfig.from_config(mcts.default_search_config())
  assert hash(cfg) == hash(mcts.SearchConfig.from_config(cfg.to_config_dict()))
  with pytest.raises(ValueError, match="unknown search config keys"):
    mcts.SearchConfig.from_config({"num_simulation": 3})
  with pytest.raises(ValueError, match="merge needs option granularity"):
    mcts.SearchConfig.from_config(_config(granularity="token", merge__enabled=True))
  with pytest.raises(ValueError, match="policy"):
    mcts.SearchConfig(policy="bogus")
  assert mcts.SearchConfig(policy="uct").policy == "uct"


# ----------------------------------------------------------------------------
# The search.


def test_root_visits_count_the_simulations_that_added_a_node(full_search, puct_search):
  sc, _, out, _ = full_search
  for o in (out, puct_search):
    wasted = np.round(np.asarray(o.stats.revisit_fraction) * sc.num_simulations)
    np.testing.assert_array_equal(o.tree.node_visits[:, 0], sc.num_simulations + 1 - wasted)
    np.testing.assert_array_equal(o.tree.children_visits[:, 0].sum(-1),
                                  o.tree.node_visits[:, 0] - 1)
    np.testing.assert_allclose(o.action_weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(o.stats.real_nodes), o.rollouts + 1)


def test_children_respect_the_slots_and_the_branching_cap(full_search, puct_search):
  for out in (full_search[2], puct_search):
    t = out.tree
    kids = np.asarray(t.children_index)
    valid = np.asarray(t.embeddings.child_valid)
    np.testing.assert_array_equal(valid, kids >= 0)
    assert not np.asarray(t.children_visits)[~valid].any()
    np.testing.assert_array_equal(np.asarray(out.action_weights)[~valid[:, 0]], 0.0)
    real = _real_nodes(out)
    per_node = valid.sum(-1)
    interior = real.copy()
    interior[:, 0] = False
    assert per_node[interior].max() <= 3 and per_node[:, 0].max() <= 4   # c_max, c_max_root
    # Children are created in slot order: no gap before a child.
    for row in valid.reshape(-1, valid.shape[-1]):
      assert list(row) == sorted(row, reverse=True)


def _norm(text):
  return text.replace(" ", "").replace("\t", "")


def test_siblings_are_distinct_steps(full_search):
  """Merge is on: no two children of a node are the same step (equal up to spaces)."""
  _, _, out, _ = full_search
  e = out.tree.embeddings
  toks, lens, valid = (np.asarray(x) for x in (e.cand_tokens, e.cand_len, e.child_valid))
  pairs = 0
  for b, n in zip(*np.nonzero(_real_nodes(out))):
    kept = [_norm(TOK.decode(toks[b, n, a, :lens[b, n, a]])) for a in np.nonzero(valid[b, n])[0]]
    pairs += len(kept) * (len(kept) - 1) // 2
    assert len(set(kept)) == len(kept), kept
  assert pairs > 0


def test_critic_driven_branching_widens_important_interior_nodes(model, prompts):
  """A real tree whose importance comes from the PRM critic: interior nodes with high
  importance get several children, and no node exceeds its n(s)."""
  cfg, params = model
  sc = mcts.SearchConfig.from_config(_config(
      policy="uct", num_simulations=24, adaptive_branching__enabled=True,
      adaptive_branching__alpha=1.0, adaptive_branching__importance_unit=0.05,
      adaptive_branching__c_min_root=1, adaptive_branching__c_max_root=2,
      adaptive_branching__c_min=1, adaptive_branching__c_max=4, weights__value=0.0,
      widening__c=2.0, widening__alpha=0.5))
  out = mcts.make_search(cfg, sc, TOK.eos_id, DELIM, mcts.Critics(prm=_bandit_reward),
                         answer_prefix_ids=ANSWER)(params, *prompts, jax.random.key(7))
  t, e = out.tree, out.tree.embeddings
  kids = np.asarray(t.children_index)
  score = np.asarray(e.score)
  real = _real_nodes(out)
  several = 0
  for b in range(kids.shape[0]):
    for n in np.nonzero(real[b])[0][1:]:
      ch = kids[b, n][kids[b, n] >= 0]
      if not len(ch):
        continue
      imp = np.max(np.abs(score[b, ch] - score[b, n]))
      cap = max(1, min(int(np.floor(imp / 0.05 + 1e-6)) + 1, 4))
      assert len(ch) <= cap + 0, (len(ch), imp)
      several += len(ch) >= 2
  assert several > 0, "no interior node got a second child"


def test_nodes_match_a_full_reencode(model, full_search):
  """KV reuse is exact: every node's value equals the value head on prompt + path, and a
  child's path is its parent's path plus the child's option."""
  cfg, params = model
  _, _, out, _ = full_search
  e, t = out.tree.embeddings, out.tree
  b, n = e.length.shape
  prompt = jnp.repeat(out.prompt[:, None], n, 1)
  mask = jnp.repeat(out.prompt_mask[:, None], n, 1)
  comp_mask = jnp.arange(e.tokens.shape[-1])[None, None] < e.length[..., None]
  seq = jnp.concatenate([prompt, e.tokens], 2).reshape(b * n, -1)
  m = jnp.concatenate([mask, comp_mask], 2).reshape(b * n, -1)
  ref = np.asarray(jax.jit(mcts.value_head_critic(cfg))(params, seq, m)).reshape(b, n)
  real = _real_nodes(out)
  np.testing.assert_allclose(np.asarray(e.value)[real], ref[real], atol=1e-4)
  parents, actions = np.asarray(t.parents), np.asarray(t.action_from_parent)
  checked = 0
  for bi in range(b):
    for ni in range(1, n):
      if not real[bi, ni]:
        continue
      p, a = parents[bi, ni], actions[bi, ni]
      plen, clen = int(e.length[bi, p]), int(e.cand_len[bi, p, a])
      assert clen == int(e.option_len[bi, ni]) > 0
      assert int(e.length[bi, ni]) == plen + clen
      np.testing.assert_array_equal(e.tokens[bi, ni, :plen], e.tokens[bi, p, :plen])
      np.testing.assert_array_equal(e.tokens[bi, ni, plen:plen + clen],
                                    e.cand_tokens[bi, p, a, :clen])
      checked += 1
  assert checked > 0


def test_accounting(full_search, puct_search):
  sc, _, out, _ = full_search
  e = out.tree.embeddings
  real = _real_nodes(out)
  np.testing.assert_allclose(out.rollouts, real[:, 1:].sum(1))
  opt = (np.asarray(e.option_len) * real)[:, 1:].sum(1)
  assert np.all(np.asarray(out.tokens) >= opt)                   # rejected draws count too
  n_prompt = np.asarray(out.prompt_mask).sum(1)
  np.testing.assert_allclose(out.policy_tokens, n_prompt + np.asarray(out.tokens))
  crit = np.asarray(out.critic_tokens["critics"])                # the external PRM
  assert np.all(crit >= n_prompt * (1 + real[:, 1:].sum(1)))     # root + each node re-encoded
  np.testing.assert_allclose(out.forward_passes, 1.0 + np.asarray(out.tokens) + crit)
  roll = 2 * (_real_nodes(puct_search) & ~np.asarray(puct_search.tree.embeddings.terminal))
  np.testing.assert_allclose(puct_search.fast_rollouts, roll[:, 1:].sum(1))


def test_external_prm_and_separate_rollout_policy(puct_search):
  out = puct_search
  e = out.tree.embeddings
  real = _real_nodes(out)
  real[:, 0] = False
  b, n = e.length.shape
  seq = jnp.concatenate([jnp.repeat(out.prompt[:, None], n, 1), e.tokens], 2).reshape(b * n, -1)
  m = jnp.concatenate([jnp.repeat(out.prompt_mask[:, None], n, 1),
                       jnp.arange(e.tokens.shape[-1])[None, None] < e.length[..., None]], 2)
  prm = np.asarray(_bandit_reward(None, seq, m.reshape(b * n, -1))).reshape(b, n)
  np.testing.assert_allclose(np.asarray(e.prm)[real], prm[real], atol=1e-6)
  live = real & ~np.asarray(e.terminal)
  assert live.any()
  assert np.all(np.asarray(e.has_orm)[live]) and np.all(np.asarray(e.fast_rollouts)[live] == 2)
  assert np.all(np.asarray(out.rollout_tokens) > 0)             # the separate rollout policy
  failed = np.asarray(e.terminal) & ~np.asarray(e.has_answer)
  score = np.asarray(mcts.node_score(mcts.WeightsConfig(), e.value, e.prm, e.orm, e.has_orm))
  score = np.where(failed, 0.0, score)
  np.testing.assert_allclose(score[real], np.asarray(e.score)[real], atol=1e-5)


def test_length_limit_without_answer_scores_zero(bandit):
  e = bandit.tree.embeddings
  real = _real_nodes(bandit)
  real[:, 0] = False
  failed = real & np.asarray(e.terminal) & ~np.asarray(e.has_answer)
  assert failed.any()
  np.testing.assert_array_equal(np.asarray(e.score)[failed], 0.0)


def test_search_compiles_once_per_configuration(model, prompts, full_search):
  cfg, params = model
  sc, search, _, before = full_search
  assert mcts.num_traces(sc) - before == 1
  ids, mask = sampling.encode_prompts(TOK, ["Q: 9*9\n", "Q: 2\n", "Q: (1+1)*3\n"],
                                      length=prompts[0].shape[1])
  search(params, ids, mask, jax.random.key(5), _CRIT_PARAMS)
  again = mcts.make_search(cfg, mcts.SearchConfig.from_config(sc), TOK.eos_id, DELIM,
                           mcts.Critics(prm=_bandit_reward), answer_prefix_ids=ANSWER,
                           same_step_ignored_ids=IGNORED)
  again(params, *prompts, jax.random.key(6), _CRIT_PARAMS)
  assert again is search
  assert mcts.num_traces(sc) - before == 1


class _TrapTask:
  """Arithmetic, but checking an answer is counted: the answer key's only door."""

  def __init__(self):
    self.inner = get_task("arithmetic", min_ops=1, max_ops=2)
    self.verified = 0

  def __getattr__(self, name):
    return getattr(self.inner, name)

  def verify(self, problem, completion):
    self.verified += 1
    return self.inner.verify(problem, completion)


def test_search_cannot_reach_the_answer_key(model):
  """Every method, eta-MCTS included, is built from the task and run on prompts only; the
  verifier (which holds the answer key) is never called by a method, only by reporting."""
  cfg, params = model
  names = list(inspect.signature(mcts.make_search(cfg, _config(), TOK.eos_id, DELIM))
               .parameters)
  assert names == ["params", "prompt", "prompt_mask", "rng", "critic_params", "rollout_params"]
  task = _TrapTask()
  problems = task.inner.generate(seed=0, num=3)
  sc = _config(num_simulations=4, max_completion_len=12)
  methods = methods_lib.build_methods(["greedy", "pass@2", "mcts"], model_cfg=cfg, tokenizer=TOK,
                                   task=task, eval_settings={"max_new_tokens": 12,
                                                             "temperature": 1.0},
                                   search_settings=sc, keep_search_output=True)
  ids, mask = sampling.encode_prompts(TOK, [task.prompt(p) for p in problems])
  for name, (fn, _) in methods.items():
    res = fn(params, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(0))
    assert float(np.min(np.asarray(res.flops))) > 0, name
  assert task.verified == 0
  # The trap works: scoring the completions after the search does verify.
  from alphallm import evaluation  # pylint: disable=g-import-not-at-top
  evaluation.tree_contains_correct(task, TOK, problems, res.search)
  evaluation.accuracy(task, problems, sampling.decode_completions(TOK, np.asarray(
      res.completions)))
  assert task.verified >= len(problems)


def test_token_level_kv_reuse_equals_recompute(model, prompts):
  cfg, params = model
  outs = []
  for recompute in (False, True):
    sc = _config(granularity="token", num_actions=3, num_simulations=8, recompute_prefix=recompute)
    search = mcts.make_search(cfg, sc, TOK.eos_id, DELIM)
    outs.append(search(params, *prompts, jax.random.key(2)))
  kv, re = outs
  for field in ("children_index", "children_visits", "node_visits", "parents"):
    np.testing.assert_array_equal(getattr(kv.tree, field), getattr(re.tree, field))
  np.testing.assert_array_equal(kv.tree.embeddings.tokens, re.tree.embeddings.tokens)
  np.testing.assert_allclose(kv.tree.node_values, re.tree.node_values, atol=1e-4)
  assert kv.tree.embeddings.path_k is not None and re.tree.embeddings.path_k is None
  assert np.all(np.asarray(re.policy_tokens) > np.asarray(kv.policy_tokens))


@pytest.fixture(scope="module")
def bandit(model, prompts):
  """Depth-1 bandit: every root option ends the solution (the completion limit equals the
  option length, no delimiter), rewarded by the ORM critic alone; 3 slots, 12 simulations."""
  cfg, params = model
  sc = _config(num_actions=3, max_option_len=4, max_completion_len=4, num_simulations=12,
               weights__value=0.0, weights__prm=0.0)
  search = mcts.make_search(cfg, sc, TOK.eos_id, (), mcts.Critics(orm=_bandit_reward))
  return search(params, *prompts, jax.random.key(4))


def test_a_finished_tree_draws_no_more_simulations(bandit):
  """Three terminal children fill the root; the other 9 simulations add nothing."""
  out = bandit
  e, t = out.tree.embeddings, out.tree
  np.testing.assert_array_equal(np.asarray(out.stats.real_nodes), 4)
  np.testing.assert_allclose(np.asarray(out.stats.revisit_fraction), 9 / 12)
  kids = np.asarray(t.children_index[:, 0])
  assert np.all(kids >= 0)
  assert np.all(np.asarray(e.terminal)[np.arange(3)[:, None], kids])
  np.testing.assert_array_equal(np.asarray(t.children_index)[:, 1:], -1)   # leaves stay leaves
  np.testing.assert_array_equal(np.asarray(t.node_visits)[:, 0], 4)


# ----------------------------------------------------------------------------
# Answer selection, export, beam search.


def test_answer_selection(full_search):
  _, _, out, _ = full_search
  t = selection.TreeArrays(out)
  for b in range(t.batch_size):
    n = selection.most_visited_node(t, b)
    path = []
    while n > 0:                              # walk up: each step is the most visited child
      p = t.parents[b, n]
      a = t.action_from_parent[b, n]
      visits = [t.children_visits[b, p, x] for x in t.real_children(b, p)]
      assert t.children_visits[b, p, a] == max(visits)
      path.append(n)
      n = p
    assert path, "the most visited path leaves the root"
  leaves = selection.select_nodes(t, "best_leaf")
  for b, n in enumerate(leaves):
    finished = [x for x in range(1, t.num_nodes) if t.real(b)[x] and t.has_answer[b, x]]
    if finished:      # training selection: the best finished leaf
      assert n in finished and t.score[b, n] == max(t.score[b, x] for x in finished)
    else:
      assert not t.real_children(b, n)
  rerank = selection.select_nodes(t, "orm_rerank")
  for b, n in enumerate(rerank):
    terms = selection.answer_candidates(t, b, include_rollouts=False)
    assert all(t.terminal[b, x] and t.has_answer[b, x] for x in terms)
    if terms:
      assert n in terms and t.orm[b, n] == max(t.orm[b, x] for x in terms)
  vote = selection.select_nodes(t, "orm_vote", tokenizer=TOK, extract_answer=lambda s: s[:1])
  assert vote.shape == (3,)


def test_search_decoder_returns_decode_result(model, prompts):
  cfg, params = model
  sc = _config(**FULL, answer_selection="most_visited")
  crit = mcts.Critics(prm=_bandit_reward)
  decode = selection.make_search_decoder(cfg, sc, TOK.eos_id, DELIM, crit,
                                         answer_prefix_ids=ANSWER,
                                         same_step_ignored_ids=IGNORED)
  res = decode(params, *prompts, jax.random.key(0))
  out = mcts.make_search(cfg, sc, TOK.eos_id, DELIM, crit, answer_prefix_ids=ANSWER,
                         same_step_ignored_ids=IGNORED)(params, *prompts, jax.random.key(0))
  n_params = decoding.param_count(params)
  assert np.all(np.asarray(res.flops) >= 2 * n_params * np.asarray(out.policy_tokens))
  assert isinstance(res, decoding.DecodeResult)
  assert res.completions.shape == (3, sc.max_completion_len)
  np.testing.assert_allclose(res.rollouts, out.rollouts)
  assert np.all(np.asarray(res.forward_passes) >= np.asarray(out.forward_passes))
  nodes = selection.select_nodes(out, "most_visited")
  toks, lens, term = selection.node_completions(out, nodes)
  for b in range(3):   # the chosen path's tokens are kept; greedy completion extends it
    np.testing.assert_array_equal(np.asarray(res.completions[b, :lens[b]]), toks[b, :lens[b]])
    extra = float(res.forward_passes[b] - out.forward_passes[b])
    assert (extra == 0) == bool(term[b])


def test_dot_export(full_search):
  _, _, out, _ = full_search
  dot = export.tree_to_dot(out, 1, TOK)
  t = selection.TreeArrays(out)
  assert dot.startswith("digraph") and dot.rstrip().endswith("}")
  for n in np.nonzero(t.real(1))[0]:
    assert f"  n{n} [label=" in dot
    if n:
      assert f"n{t.parents[1, n]} -> n{n} " in dot
  assert f"N={int(t.node_visits[1, 0])} " in dot
  assert export.escape('a"b\\c\nd') == 'a\\"b\\\\c\\\\nd'


def test_beam_search(model, prompts):
  cfg, params = model
  greedy = decoding.make_sampler(cfg, 15, TOK.eos_id)(params, *prompts, jax.random.key(0))
  one = beam.make_beam_search(cfg, beam.BeamConfig(1, 1, 5, 15, temperature=0.0), TOK.eos_id,
                              DELIM)(params, *prompts, jax.random.key(0))
  np.testing.assert_array_equal(one.completions, greedy.completions)
  np.testing.assert_allclose(one.forward_passes, greedy.forward_passes)
  np.testing.assert_allclose(one.tokens, greedy.tokens)
  wide = beam.make_beam_search(cfg, beam.BeamConfig(2, 3, 5, 15), TOK.eos_id, DELIM,
                               answer_prefix_ids=ANSWER)(params, *prompts, jax.random.key(0))
  comp = np.asarray(wide.completions)
  assert comp.shape == (3, 15) and comp.min() >= 0 and comp.max() < cfg.vocab_size
  for row in comp:      # PAD only after the completion, nothing after EOS
    n = int((row != 0).sum())
    assert np.all(row[:n] != 0)
    if TOK.eos_id in row[:n]:
      assert list(row[:n]).index(TOK.eos_id) == n - 1
  assert np.all(np.asarray(wide.tokens) >= np.asarray(one.tokens))
  np.testing.assert_allclose(wide.forward_passes, np.asarray(wide.tokens) + 1)
  assert np.all(np.asarray(wide.rollouts) >= 2)


def test_never_proposed_keeps_eos_reachable():
  assert mcts.never_proposed(0, 1, 2) == (0, 1)        # the character tokenizer
  assert mcts.never_proposed(2, 1, 2) == (1,)          # no PAD: padded with EOS (Llama-3)
  assert mcts.never_proposed(7, 2, 2) == (7,)          # no BOS: prompts start with EOS (Qwen2)
  assert mcts.never_proposed(2, 2, 2) == ()
  assert mcts.never_proposed(5, 5, 2) == (5,)


def test_token_level_actions_skip_bos_and_pad_but_not_an_eos_pad(model, prompts):
  """Every token but BOS is an action when PAD is EOS (a tokenizer without PAD)."""
  cfg, params = model
  v = cfg.vocab_size
  sc = _config(granularity="token", num_actions=v - 1, num_simulations=v - 1,
               max_completion_len=1, policy="uct", widening__c=float(v))
  out = mcts.make_search(cfg, sc, TOK.eos_id, DELIM, pad_id=TOK.eos_id, bos_id=TOK.bos_id)(
      params, *prompts, jax.random.key(0))
  e = out.tree.embeddings
  for b in range(3):
    valid = np.asarray(e.child_valid[b, 0])
    actions = np.asarray(e.cand_tokens[b, 0, :, 0])[valid]
    assert sorted(actions.tolist()) == [i for i in range(v) if i != TOK.bos_id]


@pytest.mark.parametrize("granularity", ["token", "option"])
def test_search_with_permuted_special_ids(model, prompts, granularity):
  """PAD / BOS / EOS at other ids (PAD high, text at ids 0-2) with the model's vocabulary
  renamed alike: the same tree, its tokens renamed, padding included. (Greedy options:
  sampled ones would draw other noise for renamed ids.)"""
  cfg, params = model
  perm = testing.adversarial_permutation(TOK)
  ptok = testing.PermutedTokenizer(TOK, perm)
  pparams = testing.permute_vocab(params, perm)
  pids, pmask = sampling.encode_prompts(ptok, PROMPTS)
  pdelim = ptok.token_ids_ending_with("\n")
  assert sorted(pdelim) == sorted(perm[DELIM].tolist())
  sc = _config(granularity=granularity, num_actions=3, num_simulations=6, max_completion_len=8,
               max_option_len=3, temperature=0.0)
  std = mcts.make_search(cfg, sc, TOK.eos_id, DELIM)(params, *prompts, jax.random.key(0))
  got = mcts.make_search(cfg, sc, ptok.eos_id, pdelim, pad_id=ptok.pad_id, bos_id=ptok.bos_id)(
      pparams, jnp.asarray(pids), jnp.asarray(pmask), jax.random.key(0))
  s, g = selection.TreeArrays(std), selection.TreeArrays(got)
  np.testing.assert_array_equal(g.node_visits, s.node_visits)
  np.testing.assert_array_equal(g.length, s.length)
  assert (s.length < sc.max_completion_len).any()
  np.testing.assert_array_equal(g.tokens, perm[s.tokens])      # PAD beyond each length too
  np.testing.assert_array_equal(got.tree.embeddings.cand_tokens,
                                perm[np.asarray(std.tree.embeddings.cand_tokens)])
  nodes = selection.select_nodes(s, "most_visited")
  np.testing.assert_array_equal(selection.select_nodes(g, "most_visited"), nodes)
  for b, n in enumerate(nodes):
    assert ptok.decode(g.completion(b, n)) == TOK.decode(s.completion(b, n))
