import jax
import numpy as np

from alphallm import decoding
from alphallm import methods as methods_lib
from alphallm import sampling
from alphallm import testing
from alphallm.tasks import get_task
from alphallm.tokenizer import CharTokenizer

TASK = get_task("arithmetic")


def test_majority_vote_and_ties():
  texts = ["A: 3", "A: 5", "junk", "A: 5", "A: 3"]
  # 3 and 5 tie with two votes each: the answer seen first wins.
  assert decoding.select_majority(texts, [0] * 5, TASK.extract_answer) == 0
  texts = ["A: 3", "A: 5", "A: 5"]
  assert decoding.select_majority(texts, [0] * 3, TASK.extract_answer) == 1
  assert decoding.select_majority(["x", "y"], [0, 0], TASK.extract_answer) == 0


def test_max_score_and_weighted_vote():
  texts = ["A: 3", "A: 5", "A: 5", "A: 7"]
  scores = [0.9, 0.3, 0.3, 0.95]
  assert decoding.select_max_score(texts, scores, TASK.extract_answer) == 3
  # 5 totals 0.6 < 0.9 (3) < 0.95 (7).
  assert decoding.select_weighted_vote(texts, scores, TASK.extract_answer) == 3
  assert decoding.select_weighted_vote(texts, [0.5, 0.5, 0.5, 0.1], TASK.extract_answer) == 1


def test_multi_sampler_shapes_scores_and_accounting():
  tok = CharTokenizer()
  cfg = testing.tiny_config()
  params = testing.random_params(cfg, scale=0.3)
  ids, mask = sampling.encode_prompts(tok, ["Q: 1+2\n", "Q: 3*4\n"])
  fn = decoding.make_multi_sampler(cfg, 4, 10, tok.eos_id, temperature=1.0)
  res = fn(params, ids, mask, jax.random.key(0))
  assert res.candidates.shape == (2, 4, 10) and res.candidate_scores.shape == (2, 4)
  lengths = (np.asarray(res.candidates) != 0).sum(-1)
  np.testing.assert_allclose(res.tokens, lengths.sum(1))
  np.testing.assert_allclose(res.forward_passes, lengths.sum(1) + 4)
  # Scores are the value head at each candidate's last token (re-encoded here).
  for b in range(2):
    rep = np.repeat(ids[b:b + 1], 4, 0), np.repeat(mask[b:b + 1], 4, 0)
    values, _ = decoding.score_completions(params, cfg, *rep, res.candidates[b])
    np.testing.assert_allclose(res.candidate_scores[b], values, atol=1e-4)


def test_greedy_sampler_accounting():
  tok = CharTokenizer()
  cfg = testing.tiny_config()
  params = testing.random_params(cfg, scale=0.3)
  ids, mask = sampling.encode_prompts(tok, ["Q: 1+2\n"])
  res = decoding.make_sampler(cfg, 7, tok.eos_id)(params, ids, mask, jax.random.key(0))
  n = int((np.asarray(res.completions) != 0).sum())
  assert float(res.tokens[0]) == n and float(res.forward_passes[0]) == n + 1


def test_scores_with_a_pad_that_is_the_eos():
  """A tokenizer without PAD pads with EOS: the EOS a completion ends with stays real."""
  tok = CharTokenizer()
  cfg = testing.tiny_config()
  params = testing.random_params(cfg, scale=0.3)
  ids, mask = sampling.encode_prompts(tok, ["Q: 1+2\n", "Q: 3*4\n"])
  free = decoding.make_sampler(cfg, 10, tok.eos_id)(params, ids, mask, jax.random.key(0))
  eos = int(free.completions[0, 3])        # an id the policy writes: EOS = PAD = it
  fn = decoding.make_multi_sampler(cfg, 2, 10, eos, temperature=0.0, pad_id=eos)
  res = fn(params, ids, mask, jax.random.key(0))
  cands = np.asarray(res.candidates)
  lengths = np.asarray(res.tokens) / 2
  assert lengths[0] < 10 and (cands[0, :, -1] == eos).all()   # stopped, then padded with EOS
  for b in range(2):
    rep = np.repeat(ids[b:b + 1], 2, 0), np.repeat(mask[b:b + 1], 2, 0)
    values, _ = decoding.score_completions(params, cfg, *rep, res.candidates[b], pad_id=eos,
                                           eos_id=eos)
    np.testing.assert_allclose(res.candidate_scores[b], values, atol=1e-4)
    real = sampling.completion_mask(res.candidates[b], eos, eos)
    np.testing.assert_array_equal(np.asarray(real).sum(-1), lengths[b])


def test_flops_and_critic_rerank_accounting():
  """FLOPs = 2 x params x tokens per model; a critic re-rank pays its re-encoded tokens."""
  tok = CharTokenizer()
  cfg = testing.tiny_config()
  params = testing.random_params(cfg, scale=0.3)
  ids, mask = sampling.encode_prompts(tok, ["Q: 1+2\n", "Q: 3*4\n"])
  n_params = decoding.param_count(params)
  fn = decoding.make_multi_sampler(cfg, 3, 10, tok.eos_id, temperature=1.0)
  res = fn(params, ids, mask, jax.random.key(0))
  real = np.asarray(sampling.completion_mask(res.candidates.reshape(6, -1), tok.pad_id,
                                             tok.eos_id)).reshape(2, 3, -1).sum(-1)
  policy = (real + np.asarray(mask).sum(1)[:, None]).sum(1)
  np.testing.assert_allclose(res.policy_tokens, policy)
  np.testing.assert_allclose(res.flops, 2.0 * n_params * policy, rtol=1e-6)

  def critic(p, tokens, m):     # longer sequences score higher
    del p
    return m.sum(1).astype(np.float32)

  rr = decoding.make_critic_reranker(fn, critic, None, 1000, pad_id=tok.pad_id,
                                     eos_id=tok.eos_id)(params, ids, mask, jax.random.key(0))
  np.testing.assert_allclose(rr.candidate_scores, real + np.asarray(mask).sum(1)[:, None])
  np.testing.assert_allclose(rr.critic_tokens, policy)
  np.testing.assert_allclose(rr.flops, 2.0 * n_params * policy + 2.0 * 1000 * policy, rtol=1e-6)
  np.testing.assert_allclose(rr.forward_passes, np.asarray(res.forward_passes) + policy)


def test_build_methods_by_name():
  tok = CharTokenizer()
  cfg = testing.tiny_config()
  methods = methods_lib.build_methods(
      ["greedy", "self_consistency@2", "best_of@2", "orm_rerank@2", "weighted_vote@2"],
      model_cfg=cfg, tokenizer=tok, task=TASK,
      eval_settings={"max_new_tokens": 8, "temperature": 1.0})
  assert methods["greedy"][1] is None
  assert methods["self_consistency@2"][1] is decoding.select_majority
  assert methods["best_of@2"][1] is decoding.select_max_score
  import pytest  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="unknown decoding method 'nope'"):
    methods_lib.build_methods(["nope"], model_cfg=cfg, tokenizer=tok, task=TASK,
                           eval_settings={"max_new_tokens": 8, "temperature": 1.0})
