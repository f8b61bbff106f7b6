import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphallm import checkpoint
from alphallm import data
from alphallm import testing
from alphallm import train
from alphallm.tasks import get_task
from alphallm.tokenizer import EOS_ID, CharTokenizer


@pytest.fixture(scope="module")
def dataset():
  tok = CharTokenizer()
  task = get_task("arithmetic")
  problems = task.generate(0, 64)
  return data.encode_examples(
      tok, [task.prompt(p) for p in problems], [task.demonstration(p) for p in problems],
      seq_len=64, value_targets=[float(i % 2) for i in range(64)])


def _setup(cfg, steps=4, warmup=1):
  opt = train.make_optimizer(3e-3, total_steps=steps, warmup_steps=warmup, weight_decay=0.01)
  state = train.init_train_state(testing.random_params(cfg), opt, seed=0)
  return opt, state


def _run(cfg, opt, state, ds, mesh, steps, start=0):
  step_fn = train.make_train_step(cfg, opt, mesh, value_coef=0.5)
  state = train.replicate(state, mesh)
  history = []
  for s in range(start, start + steps):
    batch = train.shard_batch(data.batch_at(ds, 16, s, seed=1), mesh)
    state, metrics = step_fn(state, batch)
    history.append(float(metrics["loss"]))
  return state, history


def test_data_parallel_step_equals_single_device(dataset):
  assert jax.device_count() == 8, "conftest should fake 8 CPU devices"
  cfg = testing.tiny_config()
  opt, state = _setup(cfg, warmup=0)
  initial = jax.tree.map(np.array, state.params)  # the step donates its input state
  one, loss1 = _run(cfg, opt, state, dataset, train.data_mesh(jax.devices()[:1]), 1)
  opt, state = _setup(cfg, warmup=0)
  eight, loss8 = _run(cfg, opt, state, dataset, train.data_mesh(jax.devices()), 1)
  np.testing.assert_allclose(loss1, loss8, rtol=1e-5)
  changed = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), one.params, initial)
  assert max(jax.tree.leaves(changed)) > 1e-4, "the step must change the parameters"
  diffs = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       one.params, eight.params)
  assert max(jax.tree.leaves(diffs)) < 1e-5, diffs


def test_sft_reduces_loss(dataset):
  cfg = testing.tiny_config()
  opt = train.make_optimizer(1e-2, total_steps=30, warmup_steps=3)
  state = train.init_train_state(testing.random_params(cfg), opt, seed=0)
  _, history = _run(cfg, opt, state, dataset, train.data_mesh(jax.devices()[:2]), 30)
  assert history[-1] < 0.6 * history[0], history


def test_checkpoint_restore_and_continue_equals_uninterrupted(dataset, tmp_path):
  cfg = testing.tiny_config()
  mesh = train.data_mesh(jax.devices()[:2])
  opt, state = _setup(cfg, steps=6)
  full, _ = _run(cfg, opt, state, dataset, mesh, 6)

  opt, state = _setup(cfg, steps=6)
  half, _ = _run(cfg, opt, state, dataset, mesh, 3)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(3, half, {"phase": "sft"})
  ckpt.close()
  del half

  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
  _, template = _setup(cfg, steps=6)
  step, restored, meta = ckpt.restore_latest(template)
  assert step == 3 and meta == {"phase": "sft"} and int(restored.step) == 3
  resumed, _ = _run(cfg, opt, restored, dataset, mesh, 3, start=3)
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_corrupt_latest_checkpoint_falls_back(dataset, tmp_path, caplog):
  cfg = testing.tiny_config()
  opt, state = _setup(cfg)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(1, state, {"n": 1})
  ckpt.save(2, state.replace(step=jnp.int32(2)), {"n": 2})
  # Damage every array file of step 2.
  for f in (tmp_path / "ckpt" / "2").rglob("*"):
    if f.is_file() and f.suffix not in (".json",) and "meta" not in str(f):
      f.write_bytes(b"garbage")
  step, restored, meta = ckpt.restore_latest(state)
  assert step == 1 and meta == {"n": 1}
  assert "unreadable" in caplog.text


def test_batches_are_deterministic_and_cover_epochs(dataset):
  a = data.batch_at(dataset, 16, 5, seed=3)
  b = data.batch_at(dataset, 16, 5, seed=3)
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  rows = np.concatenate([data.batch_at(dataset, 16, s, seed=3)["tokens"] for s in range(4)])
  assert len({r.tobytes() for r in rows}) == 64  # one epoch sees each example once


def test_encode_examples_errors():
  tok = CharTokenizer()
  with pytest.raises(data.SequenceTooLongError, match="example 0 has"):
    data.encode_examples(tok, ["Q: 1+1\n"], ["1+1=2\nA: 2"], seq_len=8)
  with pytest.raises(ValueError, match="empty"):
    data.encode_examples(tok, [], [], seq_len=8)


def test_prompt_loss_weight_masks_the_question_after_bos():
  tok = CharTokenizer()
  prompt, completion = "Q: 1+1\n", "1+1=2\nA: 2"
  plain = data.encode_examples(tok, [prompt], [completion], seq_len=32)
  both = data.encode_examples(tok, [prompt], [completion], seq_len=32, prompt_loss_weight=0.5)
  n_p, n_c = 1 + len(tok.encode(prompt)), len(tok.encode(completion)) + 1
  np.testing.assert_array_equal(plain["tokens"], both["tokens"])
  assert both["loss_mask"][0, 0] == 0.0                      # BOS is never a target
  np.testing.assert_array_equal(both["loss_mask"][0, 1:n_p], 0.5)
  np.testing.assert_array_equal(plain["loss_mask"][0, :n_p], 0.0)
  np.testing.assert_array_equal(both["loss_mask"][0, n_p:n_p + n_c], 1.0)
  assert both["loss_mask"][0, n_p + n_c:].sum() == 0.0
  with pytest.raises(ValueError, match="prompt_loss_weight"):
    data.encode_examples(tok, [prompt], [completion], seq_len=32, prompt_loss_weight=2.0)


class _PadIsEos(CharTokenizer):
  """A tokenizer without a PAD token, padded with its EOS (as Llama-3's)."""

  pad_id = EOS_ID


def _sft_rows(tok, problems, task):
  """The value dataset (targets up to EOS) and the ORM one (target at EOS) of ``tok``."""
  prompts = [task.prompt(p) for p in problems]
  demos = [task.demonstration(p) for p in problems]
  targets = [float(i % 2) for i in range(len(problems))]
  return (data.encode_examples(tok, prompts, demos, seq_len=64, value_targets=targets),
          data.encode_outcome_examples(tok, prompts, demos, targets, seq_len=64,
                                       policy_targets=[True] * len(problems)))


def test_sft_loss_does_not_depend_on_the_special_ids():
  """Renamed PAD / BOS / EOS ids (PAD high, a real character at id 0) or PAD == EOS:
  with the model's vocabulary renamed alike, every loss and count is unchanged."""
  tok, cfg = CharTokenizer(), testing.tiny_config()
  params = testing.random_params(cfg, scale=0.3)
  perm = testing.adversarial_permutation(tok)
  task = get_task("arithmetic")
  problems = task.generate(0, 8)
  loss = jax.jit(train.loss_sums, static_argnums=1)
  want = [loss(params, cfg, ds) for ds in _sft_rows(tok, problems, task)]
  for other, other_params in ((testing.PermutedTokenizer(tok, perm),
                               testing.permute_vocab(params, perm)), (_PadIsEos(), params)):
    for ds, ref in zip(_sft_rows(other, problems, task), want):
      assert ds["tokens"][~ds["token_mask"]].tolist() == [other.pad_id] * (~ds["token_mask"]).sum()
      got = loss(other_params, cfg, ds)
      assert set(got) == set(ref)
      for key in ("tokens", "correct", "value_count"):
        assert float(got[key]) == float(ref[key]), (type(other).__name__, key)
      for key in ("nll_sum", "value_se_sum"):
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, err_msg=key)


def test_non_finite_loss_names_the_step():
  with pytest.raises(train.NonFiniteLossError, match="step 7"):
    train.check_finite({"loss": np.nan, "grad_norm": 1.0}, 7)
