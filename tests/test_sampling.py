import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphallm import model as model_lib
from alphallm import sampling
from alphallm import testing
from alphallm.tokenizer import CharTokenizer, EOS_ID


@pytest.fixture(scope="module")
def setup():
  tok = CharTokenizer()
  cfg = testing.tiny_config()
  return tok, cfg, testing.random_params(cfg, scale=0.3)


def _greedy_reference(params, cfg, ids, n):
  """Greedy decoding by re-running the full forward pass (no cache)."""
  seq = list(ids)
  for _ in range(n):
    logits = model_lib.Transformer(cfg).apply({"params": params}, jnp.array([seq])).logits
    seq.append(int(logits[0, -1].argmax()))
  return seq[len(ids):]


def test_greedy_matches_uncached_reference(setup):
  tok, cfg, params = setup
  prompts = ["Q: 1+2\n", "Q: ((3*4)-5)+6\n"]
  ids, mask = sampling.encode_prompts(tok, prompts)
  out = sampling.generate(params, cfg, ids, mask, jax.random.key(0), max_new_tokens=8)
  for row, prompt in enumerate(prompts):
    ref = _greedy_reference(params, cfg, [tok.bos_id] + tok.encode(prompt), 8)
    assert list(np.asarray(out.tokens[row])) == ref
  assert int(out.forward_passes) == 9


def test_per_example_stop_and_padding(setup):
  tok, cfg, params = setup
  ids, mask = sampling.encode_prompts(tok, ["Q: 1\n", "Q: 22\n", "Q: 333\n"])
  out = sampling.generate(params, cfg, ids, mask, jax.random.key(1), max_new_tokens=12,
                          temperature=1.0)
  first = np.asarray(out.tokens[:, 0])
  # Stop every example on whatever it emits first: each must stop after one token.
  out = sampling.generate(params, cfg, ids, mask, jax.random.key(1), max_new_tokens=12,
                          temperature=1.0, stop_tokens=jnp.asarray(np.unique(first)))
  assert np.all(np.asarray(out.lengths) == 1)
  assert np.all(np.asarray(out.stopped))
  assert np.all(np.asarray(out.tokens[:, 1:]) == tok.pad_id)
  assert int(out.forward_passes) == 2


def test_sampling_is_seeded_and_top_k_restricts(setup):
  tok, cfg, params = setup
  ids, mask = sampling.encode_prompts(tok, ["Q: 5\n"] * 16)
  a = sampling.generate(params, cfg, ids, mask, jax.random.key(7), max_new_tokens=6,
                        temperature=1.0)
  b = sampling.generate(params, cfg, ids, mask, jax.random.key(7), max_new_tokens=6,
                        temperature=1.0)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert len({tuple(r) for r in np.asarray(a.tokens)}) > 1
  k1 = sampling.generate(params, cfg, ids, mask, jax.random.key(7), max_new_tokens=6,
                         temperature=1.0, top_k=1)
  g = sampling.generate(params, cfg, ids, mask, jax.random.key(7), max_new_tokens=6)
  np.testing.assert_array_equal(k1.tokens, g.tokens)


def test_logprobs_are_policy_logprobs(setup):
  tok, cfg, params = setup
  ids, mask = sampling.encode_prompts(tok, ["Q: 9\n"])
  out = sampling.generate(params, cfg, ids, mask, jax.random.key(2), max_new_tokens=5,
                          temperature=1.0)
  seq = jnp.concatenate([jnp.asarray(ids), out.tokens], 1)
  logits = model_lib.Transformer(cfg).apply({"params": params}, seq).logits
  logp = jax.nn.log_softmax(logits[0, ids.shape[1] - 1:-1])
  ref = jnp.take_along_axis(logp, out.tokens[0][:, None], -1)[:, 0]
  np.testing.assert_allclose(out.logprobs[0], ref, atol=1e-4)


def test_encode_prompts_errors_on_overlong(setup):
  tok, _, _ = setup
  with pytest.raises(ValueError, match="prompt 1 has"):
    sampling.encode_prompts(tok, ["Q: 1", "Q: 123456789"], length=6)
  with pytest.raises(ValueError, match="no prompts"):
    sampling.encode_prompts(tok, [])


def test_eos_stop_and_decode(setup):
  tok, _, _ = setup
  row = np.array(tok.encode("1+2=3\nA: 3") + [EOS_ID, 0, 0])
  assert sampling.decode_completions(tok, row[None])[0] == "1+2=3\nA: 3"


def test_permuted_special_ids_give_the_same_completions(setup):
  """Any PAD / BOS / EOS ids: a model with its vocabulary renamed writes the same text."""
  tok, cfg, params = setup
  perm = testing.adversarial_permutation(tok)
  ptok = testing.PermutedTokenizer(tok, perm)
  pparams = testing.permute_vocab(params, perm)
  prompts = ["Q: 1+2\n", "Q: 11 1\n", "Q: 3\n"]
  ids, mask = sampling.encode_prompts(tok, prompts)
  pids, pmask = sampling.encode_prompts(ptok, prompts)
  np.testing.assert_array_equal(pids[mask], perm[ids[mask]])
  free = sampling.generate(params, cfg, ids, mask, jax.random.key(0), max_new_tokens=8)
  # Stop the rows at different steps, so that each is padded from its own end.
  stops = np.unique(np.asarray(free.tokens)[[0, 1], [1, 4]])
  std = sampling.generate(params, cfg, ids, mask, jax.random.key(0), max_new_tokens=8,
                          stop_tokens=jnp.asarray(stops))
  out = sampling.generate(pparams, cfg, pids, pmask, jax.random.key(0), max_new_tokens=8,
                          stop_tokens=jnp.asarray(perm[stops]), pad_id=ptok.pad_id)
  assert len(set(np.asarray(std.lengths).tolist())) > 1
  np.testing.assert_array_equal(out.lengths, std.lengths)
  np.testing.assert_array_equal(out.tokens, perm[np.asarray(std.tokens)])   # padding too
  assert sampling.decode_completions(ptok, out.tokens) == sampling.decode_completions(
      tok, std.tokens)


def test_completion_mask_keeps_an_eos_that_is_also_pad():
  rows = jnp.array([[5, 6, 2, 2, 2],     # EOS, then PAD == EOS
                    [5, 2, 2, 2, 2],
                    [5, 6, 7, 8, 9]])    # never stopped
  want = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(sampling.completion_mask(rows, pad_id=2, eos_id=2), want)
  # The character tokenizer's ids (PAD 0): the same as ``tokens != 0``.
  rows = jnp.array([[5, 6, 2, 0, 0], [5, 6, 0, 0, 0]])
  np.testing.assert_array_equal(sampling.completion_mask(rows), np.asarray(rows) != 0)
