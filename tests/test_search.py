"""Properties of eta-MCTS (alphallm.search): correctness, masking, accounting, export."""

import inspect

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from alphallm import decoding
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


# eta-MCTS features: adaptive branching and state merge (fast rollouts: see puct_search).
FULL = dict(adaptive_branching__enabled=True, adaptive_branching__alpha=0.7,
            adaptive_branching__c_min_root=2, adaptive_branching__c_max_root=4,
            adaptive_branching__c_min=1, adaptive_branching__c_max=3,
            merge__enabled=True, merge__threshold=2)


def _bandit_reward(params, tokens, mask):
  """A critic that prefers even token ids (a deterministic function of the text)."""
  del params
  even = ((tokens % 2) == 0) & mask & (tokens > 2)
  return even.sum(1) / jnp.maximum(mask.sum(1), 1)


@pytest.fixture(scope="module")
def full_search(model, prompts):
  cfg, params = model
  sc = _config(**FULL)
  search = mcts.make_search(cfg, sc, TOK.eos_id, DELIM, answer_prefix_ids=ANSWER)
  before = mcts.num_traces(sc)
  out = search(params, *prompts, jax.random.key(0))
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
    mcts.SearchConfig(policy="uct")


# ----------------------------------------------------------------------------
# The search.


def test_root_visits_sum_to_num_simulations(full_search, puct_search):
  sc, _, out, _ = full_search
  for o in (out, puct_search):
    np.testing.assert_array_equal(o.tree.children_visits[:, 0].sum(-1), sc.num_simulations)
    np.testing.assert_array_equal(o.tree.node_visits[:, 0], sc.num_simulations + 1)
    np.testing.assert_allclose(o.action_weights.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("which", ["gumbel", "puct"])
def test_masked_children_are_never_selected(full_search, puct_search, which):
  out = full_search[2] if which == "gumbel" else puct_search
  valid = np.asarray(out.tree.embeddings.child_valid)
  visits = np.asarray(out.tree.children_visits)
  created = np.asarray(out.tree.children_index) >= 0
  assert (~valid).any(), "the config should mask some children"
  assert not visits[~valid].any()
  assert not created[~valid].any()
  # Adaptive branching: a real non-terminal node never has more than c_max children.
  e = out.tree.embeddings
  interior = _real_nodes(out) & ~np.asarray(e.terminal)
  interior[:, 0] = False
  assert valid[interior].sum(-1).max() <= 3
  assert valid[:, 0].sum(-1).min() >= 2 and valid[:, 0].sum(-1).max() <= 4
  np.testing.assert_array_equal(np.asarray(out.action_weights)[~valid[:, 0]], 0.0)


def test_merged_siblings_are_distinct(full_search):
  sc, _, out, _ = full_search
  e = out.tree.embeddings
  real = _real_nodes(out) & ~np.asarray(e.terminal)
  toks, lens, valid = (np.asarray(x) for x in (e.cand_tokens, e.cand_len, e.child_valid))
  pairs = 0
  for b, n in zip(*np.nonzero(real)):
    kept = [list(toks[b, n, a, :lens[b, n, a]]) for a in np.nonzero(valid[b, n])[0]]
    for i in range(len(kept)):
      for j in range(i):
        pairs += 1
        assert _levenshtein(kept[i], kept[j]) > sc.merge.threshold
  assert pairs > 0


def test_nodes_match_a_full_reencode(model, full_search):
  """KV reuse is exact: every node's value equals the value head on prompt + path, and a
  child is its parent's candidate (tokens and candidate value)."""
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
  for bi in range(b):
    for ni in range(1, n):
      if not real[bi, ni]:
        continue
      p, a = parents[bi, ni], actions[bi, ni]
      plen, clen = int(e.length[bi, p]), int(e.cand_len[bi, p, a])
      assert int(e.length[bi, ni]) == plen + clen
      np.testing.assert_array_equal(e.tokens[bi, ni, plen:plen + clen],
                                    e.cand_tokens[bi, p, a, :clen])
      np.testing.assert_allclose(e.cand_value[bi, p, a], e.value[bi, ni], atol=1e-4)


@pytest.mark.parametrize("which", ["gumbel", "puct"])
def test_accounting(full_search, puct_search, which):
  out = full_search[2] if which == "gumbel" else puct_search
  e = out.tree.embeddings
  real = _real_nodes(out)
  np.testing.assert_allclose(out.rollouts, real[:, 1:].sum(1))
  np.testing.assert_allclose(out.forward_passes, (np.asarray(e.forward_passes) * real).sum(1))
  # Each real node pays at least its candidates' tokens; the root pays the prefill.
  cand_tokens = (np.asarray(e.cand_len) * real[..., None]).sum((1, 2))
  assert np.all(np.asarray(out.tokens) >= cand_tokens)
  assert np.all(np.asarray(out.forward_passes) > np.asarray(out.tokens))
  assert np.all(np.asarray(e.forward_passes)[~real] == 0)
  roll = (2 if which == "puct" else 0) * (real & ~np.asarray(e.terminal))[:, 1:].sum(1)
  np.testing.assert_allclose(out.fast_rollouts, roll)


def test_external_prm_and_separate_rollout_policy(puct_search):
  out = puct_search
  e = out.tree.embeddings
  real = _real_nodes(out)
  real[:, 0] = False
  # The PRM critic sees prompt + the node's completion.
  b, n = e.length.shape
  seq = jnp.concatenate([jnp.repeat(out.prompt[:, None], n, 1), e.tokens], 2).reshape(b * n, -1)
  m = jnp.concatenate([jnp.repeat(out.prompt_mask[:, None], n, 1),
                       jnp.arange(e.tokens.shape[-1])[None, None] < e.length[..., None]], 2)
  prm = np.asarray(_bandit_reward(None, seq, m.reshape(b * n, -1))).reshape(b, n)
  np.testing.assert_allclose(np.asarray(e.prm)[real], prm[real], atol=1e-6)
  live = real & ~np.asarray(e.terminal)
  live[:, 0] = False
  assert live.any()
  assert np.all(np.asarray(e.has_orm)[live]) and np.all(np.asarray(e.fast_rollouts)[live] == 2)
  # Each live node also pays the PRM's re-encoded tokens and the rollout prefix re-encode.
  n_prompt = np.asarray(out.prompt_mask).sum(1)[:, None]
  extra = np.asarray(e.forward_passes) - np.asarray(e.cand_len).sum(-1)
  assert np.all(extra[live] >= (n_prompt + 2 * np.asarray(e.length))[live])
  score = mcts.node_score(mcts.WeightsConfig(), e.value, e.prm, e.orm, e.has_orm)
  np.testing.assert_allclose(score, e.score, atol=1e-5)


def test_search_compiles_once_per_configuration(model, prompts, full_search):
  cfg, params = model
  sc, search, _, before = full_search
  assert mcts.num_traces(sc) - before == 1
  ids, mask = sampling.encode_prompts(TOK, ["Q: 9*9\n", "Q: 2\n", "Q: (1+1)*3\n"],
                                      length=prompts[0].shape[1])
  search(params, ids, mask, jax.random.key(5))
  again = mcts.make_search(cfg, mcts.SearchConfig.from_config(sc), TOK.eos_id, DELIM,
                           answer_prefix_ids=ANSWER)
  again(params, *prompts, jax.random.key(6))
  assert again is search
  assert mcts.num_traces(sc) - before == 1


def test_search_sees_only_prompts(model, full_search):
  """No leakage: the search takes only prompts, and answers cannot change its result."""
  cfg, params = model
  _, search, _, _ = full_search
  names = list(inspect.signature(search).parameters)
  assert names == ["params", "prompt", "prompt_mask", "rng", "critic_params", "rollout_params"]
  task = get_task("arithmetic", min_ops=1, max_ops=2)
  problems = task.generate(seed=0, num=3)
  lying = [Problem(p.question, str(int(p.answer) + 17), {}) for p in problems]
  outs = []
  for ps in (problems, lying):
    ids, mask = sampling.encode_prompts(TOK, [task.prompt(p) for p in ps], length=16)
    outs.append(search(params, ids, mask, jax.random.key(3)))
  for x, y in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
    np.testing.assert_array_equal(x, y)


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
  assert np.all(np.asarray(re.forward_passes) > np.asarray(kv.forward_passes))


@pytest.fixture(scope="module")
def bandit(model, prompts):
  """Depth-1 bandit: every root option ends the solution (the completion limit equals the
  option length, no delimiter) and is rewarded by the ORM critic alone."""
  cfg, params = model
  sc = _config(num_actions=6, max_option_len=4, max_completion_len=4, num_simulations=12,
               max_num_considered_actions=6, weights__value=0.0, weights__prm=0.0)
  search = mcts.make_search(cfg, sc, TOK.eos_id, (), mcts.Critics(orm=_bandit_reward))
  return search(params, *prompts, jax.random.key(4))


def test_improved_policy_beats_prior_on_bandit(bandit, prompts):
  out = bandit
  e, t = out.tree.embeddings, out.tree
  cand = np.asarray(e.cand_tokens[:, 0])                                  # [B, A, O]
  lens = np.asarray(e.cand_len[:, 0])
  b, a, o = cand.shape
  seq = jnp.concatenate([jnp.repeat(prompts[0][:, None], a, 1), jnp.asarray(cand)], 2)
  m = jnp.concatenate([jnp.repeat(prompts[1][:, None], a, 1),
                       jnp.arange(o)[None, None] < lens[..., None]], 2)
  reward = np.asarray(_bandit_reward(None, seq.reshape(b * a, -1), m.reshape(b * a, -1)))
  reward = reward.reshape(b, a)
  prior = np.asarray(jax.nn.softmax(t.children_prior_logits[:, 0]))
  weights = np.asarray(out.action_weights)
  improved, base = (weights * reward).sum(1), (prior * reward).sum(1)
  assert np.all(improved >= base - 1e-6)
  assert np.any(improved > base + 1e-3)


def test_terminal_nodes_are_absorbing(bandit):
  out = bandit
  e, t = out.tree.embeddings, out.tree
  real = _real_nodes(out)
  children = np.asarray(t.children_index[:, 0])
  visited = children >= 0
  b_idx = np.nonzero(visited)[0]
  kids = children[visited]
  assert np.all(np.asarray(e.terminal)[b_idx, kids])
  assert np.all(np.asarray(t.children_discounts[:, 0])[visited] == 0)
  np.testing.assert_allclose(np.asarray(t.children_rewards[:, 0])[visited],
                             np.asarray(e.orm)[b_idx, kids], atol=1e-6)
  np.testing.assert_allclose(np.asarray(t.raw_values)[b_idx, kids], 0.0)
  # Every deeper node is an absorbing dummy: no reward, no cost, not counted.
  depth = np.asarray(e.depth)
  assert np.all(np.asarray(e.absorbing)[depth >= 2])
  assert (depth >= 2).any()
  assert np.all(np.asarray(e.forward_passes)[depth >= 2] == 0)
  np.testing.assert_allclose(out.rollouts, visited.sum(1))
  np.testing.assert_allclose(out.rollouts, real[:, 1:].sum(1))


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
    assert not t.real_children(b, n)
  rerank = selection.select_nodes(t, "orm_rerank")
  for b, n in enumerate(rerank):
    terms = selection.terminal_nodes(t, b)
    if terms:
      assert t.terminal[b, n] and t.orm[b, n] == max(t.orm[b, x] for x in terms)
  vote = selection.select_nodes(t, "orm_vote", tokenizer=TOK, extract_answer=lambda s: s[:1])
  assert vote.shape == (3,)


def test_search_decoder_returns_decode_result(model, prompts):
  cfg, params = model
  sc = _config(**FULL, answer_selection="most_visited")
  decode = selection.make_search_decoder(cfg, sc, TOK.eos_id, DELIM, answer_prefix_ids=ANSWER)
  res = decode(params, *prompts, jax.random.key(0))
  out = mcts.make_search(cfg, sc, TOK.eos_id, DELIM, answer_prefix_ids=ANSWER)(
      params, *prompts, jax.random.key(0))
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


class _Valid:
  def __init__(self, child_valid):
    self.child_valid = child_valid


def test_selection_wrappers_mask_by_child_valid():
  """Interior selection obeys the node's mask whatever the priors say: here the masked
  child has the largest prior, and mctx's own selection functions pick it."""
  a = 3
  tree = mctx.Tree(
      node_visits=jnp.array([5, 4]), raw_values=jnp.zeros(2), node_values=jnp.zeros(2),
      parents=jnp.array([-1, 0]), action_from_parent=jnp.array([-1, 0]),
      children_index=jnp.full((2, a), -1).at[0, 0].set(1),
      children_prior_logits=jnp.array([[0.0, -1e9, -1e9], [0.0, 9.0, 0.0]]),
      children_visits=jnp.zeros((2, a), jnp.int32).at[0, 0].set(4),
      children_rewards=jnp.zeros((2, a)), children_discounts=jnp.ones((2, a)),
      children_values=jnp.zeros((2, a)),
      embeddings=_Valid(jnp.array([[1, 0, 0], [1, 0, 1]], bool)),
      root_invalid_actions=jnp.zeros(a), extra_data=None)
  key = jax.random.key(0)
  assert int(mctx.muzero_action_selection(key, tree, 1, 1)) == 1
  assert int(mctx.gumbel_muzero_interior_action_selection(key, tree, 1, 1)) == 1
  assert int(mcts.puct_action_selection(key, tree, 1, 1, pb_c_init=1.0,
                                        pb_c_base=19652.0)) in (0, 2)
  assert int(mcts.gumbel_interior_action_selection(key, tree, 1, 1)) in (0, 2)
  assert mcts.bytes_per_node(testing.tiny_config(), _config())["total"] > 0


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
  sc = _config(granularity="token", num_actions=v - 1, num_simulations=2,
               max_completion_len=2, max_num_considered_actions=4)
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
