"""Expansion pieces (alphallm.search.expansion / options): same-step merge, distinct sampling."""

import jax
import jax.numpy as jnp
import numpy as np

from alphallm import model as model_lib
from alphallm import sampling
from alphallm import testing
from alphallm.search import critic_slots
from alphallm.search import expansion
from alphallm.search import mcts
from alphallm.search import options as opt_lib
from alphallm.tasks import get_task
from alphallm.tokenizer import CharTokenizer

TOK = CharTokenizer()


def _ids(text, o=12):
  ids = TOK.encode(text)
  return jnp.asarray(ids + [TOK.pad_id] * (o - len(ids)), jnp.int32), jnp.int32(len(ids))


def _same(a, b, ignored=" "):
  ta, la = _ids(a)
  tb, lb = _ids(b)
  ign = jnp.asarray(mcts.same_step_token_ids(TOK, ignored), jnp.int32)
  return bool(expansion.same_step(ta, la, tb, lb, ign))


def test_same_step_hook_merges_only_the_same_step():
  ignored = get_task("arithmetic").same_step_ignored
  assert _same("7*8=56\n", "7 * 8 = 56\n", ignored)          # spacing only: the same step
  assert not _same("7*8=56\n", "7*8=54\n", ignored)          # another result: never merged
  assert not _same("7*8=56\n", "7*8=5\n", ignored)
  assert not _same("7*8=56\n", "7 * 8 = 56\n", "")            # no hook: only identical text
  assert _same("A: 3", "A: 3", "")


def test_is_new_step_against_siblings():
  ign = jnp.asarray(mcts.same_step_token_ids(TOK, " "), jnp.int32)
  sib = jnp.stack([_ids("3+4=7\n")[0], _ids("3+4=8\n")[0]])
  sib_len = jnp.asarray([6, 6])
  new = lambda t, valid=(True, True): bool(expansion.is_new_step(  # noqa: E731
      *_ids(t), sib, sib_len, jnp.asarray(valid), ign))
  assert not new("3 + 4 = 7\n")
  assert new("3+4=9\n")
  assert new("3+4=8\n", valid=(True, False))                 # an invalid slot is no sibling
  assert not new("")                                         # an empty option is never new


def _model():
  cfg = testing.tiny_config()
  return cfg, testing.random_params(cfg, scale=0.3)


def test_sampling_without_replacement_avoids_siblings():
  """Greedy decoding with the greedy option avoided yields a different option, and its
  log-probability is the unrestricted policy's."""
  cfg, params = _model()
  ids, mask = sampling.encode_prompts(TOK, ["Q: 1+2\n", "Q: 7*8\n"])
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  b, p = ids.shape
  o = 6
  model = model_lib.Transformer(cfg)
  pre = model.apply({"params": params}, ids, model_lib.default_positions(mask), mask,
                    model_lib.KVCache.init(cfg, b, p + o), jnp.zeros((b,), jnp.int32))
  stop = jnp.asarray(TOK.token_ids_ending_with("\n") + [TOK.eos_id], jnp.int32)
  args = (cfg, params, pre.cache, pre.logits[:, -1], jnp.full((b,), p), mask.sum(1),
          jnp.full((b,), o), stop, jax.random.key(0))
  first = opt_lib.sample_options(*args, max_len=o, temperature=0.0)
  avoid = first.tokens[:, None, :]
  second = opt_lib.sample_options(*args, max_len=o, temperature=0.0, avoid=avoid,
                                  avoid_len=first.lengths[:, None])
  for r in range(b):
    a = list(np.asarray(first.tokens[r, :first.lengths[r]]))
    c = list(np.asarray(second.tokens[r, :second.lengths[r]]))
    assert a != c and len(c) > 0
  # Without avoidance greedy repeats itself exactly (the test can fail).
  again = opt_lib.sample_options(*args, max_len=o, temperature=0.0)
  np.testing.assert_array_equal(again.tokens, first.tokens)


def test_critic_slots_fill_their_own_slot():
  class C:
    def __init__(self, k):
      self.params = {"k": k}
      self.score = C.fn

    @staticmethod
    def fn(p, tokens, mask):
      return jnp.full((tokens.shape[0],), p["k"], jnp.float32)

  crit, params = critic_slots.critic_slots(value=C(0.25), prm=C(0.5), orm=C(0.75))
  t, m = jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 3), bool)
  assert float(crit.value(params, t, m)[0]) == 0.25
  assert float(crit.prm(params, t, m)[0]) == 0.5
  assert float(crit.orm(params, t, m)[0]) == 0.75
  zero = lambda p, tokens, mask: jnp.zeros((tokens.shape[0],))  # noqa: E731
  crit, params = critic_slots.critic_slots(value=C(0.25), orm=C(0.75), step_checker=zero)
  assert crit.prm is zero and float(crit.orm(params, t, m)[0]) == 0.0
  assert float(crit.value(params, t, m)[0]) == 0.0
