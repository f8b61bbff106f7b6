"""From (prompt, completion) text pairs to fixed-shape training batches.

A training example is ``BOS + prompt + completion + EOS``, right-padded to
``seq_len``. The loss mask selects the completion and its EOS: the policy is
trained on ``log pi(y | x)`` only, as in the paper's SFT.

Batches are a pure function of ``(seed, step)`` (``batch_at``), so a resumed
run reads exactly the batches an uninterrupted one would have read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from alphallm.tokenizer import Tokenizer


class SequenceTooLongError(ValueError):
  """An example does not fit in ``seq_len`` tokens."""


def encode_examples(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
                    seq_len: int, value_targets: Sequence[float] | None = None
                    ) -> dict[str, np.ndarray]:
  """Encodes SFT examples.

  Args:
    tokenizer: the tokenizer.
    prompts: the conditioning texts.
    completions: the texts to learn (steps and answer line, no EOS).
    seq_len: static length T of every row.
    value_targets: optional per-example scalar that every completion position
      should predict with the value head (e.g. final correctness, 0 or 1).

  Returns:
    ``tokens [N, T] int32``, ``loss_mask [N, T] float32`` (1 on completion
    tokens and EOS), and ``value_target``/``value_mask [N, T] float32``.
  """
  if len(prompts) != len(completions):
    raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
  if not prompts:
    raise ValueError("encode_examples: no examples (empty dataset or split)")
  n = len(prompts)
  tokens = np.full((n, seq_len), tokenizer.pad_id, np.int32)
  loss_mask = np.zeros((n, seq_len), np.float32)
  value_target = np.zeros((n, seq_len), np.float32)
  value_mask = np.zeros((n, seq_len), np.float32)
  for i, (prompt, completion) in enumerate(zip(prompts, completions)):
    p = [tokenizer.bos_id] + tokenizer.encode(prompt)
    c = tokenizer.encode(completion) + [tokenizer.eos_id]
    if len(p) + len(c) > seq_len:
      raise SequenceTooLongError(
          f"example {i} has {len(p) + len(c)} tokens, more than seq_len={seq_len}: "
          f"{(prompt + completion)[:100]!r}")
    tokens[i, :len(p) + len(c)] = p + c
    loss_mask[i, len(p):len(p) + len(c)] = 1.0
    if value_targets is not None:
      # The value at token j scores the state ending at j: every state from the
      # end of the prompt to the end of the completion gets the final outcome.
      value_target[i, len(p) - 1:len(p) + len(c)] = value_targets[i]
      value_mask[i, len(p) - 1:len(p) + len(c)] = 1.0
  return {"tokens": tokens, "loss_mask": loss_mask, "value_target": value_target,
          "value_mask": value_mask}


def batch_at(dataset: dict[str, np.ndarray], batch_size: int, step: int, seed: int
             ) -> dict[str, np.ndarray]:
  """The batch of training step ``step``: epoch-wise shuffling, seeded.

  Epoch ``e`` visits the examples in ``permutation(seed, e)``; batches wrap
  around the epoch boundary, so every batch is full.
  """
  n = len(next(iter(dataset.values())))
  if n == 0:
    raise ValueError("batch_at: empty dataset")
  start = step * batch_size
  idx = np.empty((batch_size,), np.int64)
  filled = 0
  while filled < batch_size:
    epoch, offset = divmod(start + filled, n)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    take = min(batch_size - filled, n - offset)
    idx[filled:filled + take] = perm[offset:offset + take]
    filled += take
  return {k: v[idx] for k, v in dataset.items()}
