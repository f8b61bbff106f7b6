"""From (prompt, completion) text pairs to fixed-shape training batches.

A training example is ``BOS + prompt + completion + EOS``, right-padded to
``seq_len`` with the tokenizer's PAD. The loss mask selects the completion and
its EOS: the policy is trained on ``log pi(y | x)`` only, as in the paper's
SFT. The token mask says which tokens are real (BOS through EOS): it, not the
PAD id, is what the model attends to, since a tokenizer's PAD may be its EOS
(``alphallm.hf_tokenizer``).

Batches are a pure function of ``(seed, step)`` (``batch_at``), so a resumed
run reads exactly the batches an uninterrupted one would have read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from alphallm.tokenizer import PAD_ID, Tokenizer


class SequenceTooLongError(ValueError):
  """An example does not fit in ``seq_len`` tokens."""


def encode_examples(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
                    seq_len: int, value_targets: Sequence[float] | None = None,
                    append_eos: bool = True, prompt_loss_weight: float = 0.0
                    ) -> dict[str, np.ndarray]:
  """Encodes SFT examples.

  Args:
    tokenizer: the tokenizer.
    prompts: the conditioning texts.
    completions: the texts to learn (steps and answer line, no EOS).
    seq_len: static length T of every row.
    value_targets: optional per-example scalar that every completion position
      should predict with the value head (e.g. final correctness, 0 or 1).
    append_eos: False for partial completions (e.g. one reasoning step).
    prompt_loss_weight: weight of the prompt's tokens (after BOS) in the LM
      loss; 0 (default) learns the completions only. A positive weight also
      teaches the policy to write questions, which imagination's "policy"
      source samples from it.

  Returns:
    ``tokens [N, T] int32``, ``token_mask [N, T] bool`` (True from BOS to the
    last token), ``loss_mask [N, T] float32`` (1 on completion tokens and EOS,
    ``prompt_loss_weight`` on prompt tokens after BOS), and
    ``value_target``/``value_mask [N, T] float32``.
  """
  if not 0.0 <= prompt_loss_weight <= 1.0:
    raise ValueError(f"prompt_loss_weight must be in [0, 1], got {prompt_loss_weight!r}")
  if len(prompts) != len(completions):
    raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
  if not prompts:
    raise ValueError("encode_examples: no examples (empty dataset or split)")
  n = len(prompts)
  tokens = np.full((n, seq_len), tokenizer.pad_id, np.int32)
  token_mask = np.zeros((n, seq_len), bool)
  loss_mask = np.zeros((n, seq_len), np.float32)
  value_target = np.zeros((n, seq_len), np.float32)
  value_mask = np.zeros((n, seq_len), np.float32)
  for i, (prompt, completion) in enumerate(zip(prompts, completions)):
    p = [tokenizer.bos_id] + tokenizer.encode(prompt)
    c = tokenizer.encode(completion) + ([tokenizer.eos_id] if append_eos else [])
    if len(p) + len(c) > seq_len:
      raise SequenceTooLongError(
          f"example {i} has {len(p) + len(c)} tokens, more than seq_len={seq_len}: "
          f"{(prompt + completion)[:100]!r}")
    tokens[i, :len(p) + len(c)] = p + c
    token_mask[i, :len(p) + len(c)] = True
    loss_mask[i, 1:len(p)] = prompt_loss_weight
    loss_mask[i, len(p):len(p) + len(c)] = 1.0
    if value_targets is not None:
      # The value at token j scores the state ending at j: every state from the
      # end of the prompt to the end of the completion gets the final outcome.
      value_target[i, len(p) - 1:len(p) + len(c)] = value_targets[i]
      value_mask[i, len(p) - 1:len(p) + len(c)] = 1.0
  return {"tokens": tokens, "token_mask": token_mask, "loss_mask": loss_mask,
          "value_target": value_target, "value_mask": value_mask}


def batch_token_mask(batch: dict[str, np.ndarray]) -> np.ndarray:
  """``[N, T] bool``: the real tokens of encoded rows.

  Every ``encode_*`` function here writes ``batch["token_mask"]``; a batch
  built by hand without it is read as the character tokenizer's
  (``tokens != PAD_ID``, PAD = 0), which is wrong for other tokenizers.
  """
  if "token_mask" in batch:
    return np.asarray(batch["token_mask"], bool)
  return np.asarray(batch["tokens"]) != PAD_ID


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


# ---------------------------------------------------------------------------
# Critic training data: value targets at chosen positions.
#
# Every function below lays a row out exactly as ``encode_examples`` does
# (``BOS + prompt + completion + EOS``, right-padded with PAD), so a critic
# trained on it reads the same positions as one trained on ``encode_examples``.
# They differ only in *where* the value head gets a target:
#
# * ``encode_examples(value_targets=...)``: every state from the end of the
#   prompt to EOS (the value function);
# * ``encode_outcome_examples``: EOS only (the outcome reward model);
# * ``encode_step_value_examples``: the last token of each step (the process
#   reward model), optionally also the end of the prompt (the root state).
#
# The policy loss mask is off unless ``policy_targets`` selects examples: a
# critic's data holds wrong trajectories, which the policy must not imitate.


def split_completion(completion: str, delimiter: str) -> list[str]:
  """The steps of ``completion``, each with its delimiter (the last may lack it).

  ``"".join(split_completion(c, d)) == c``, and there are as many pieces as
  ``Task.split_steps`` returns steps (a trailing delimiter ends the last step
  rather than starting an empty one).
  """
  if not delimiter:
    raise ValueError("split_completion: empty delimiter")
  parts = completion.split(delimiter)
  pieces = [p + delimiter for p in parts[:-1]]
  if parts[-1]:
    pieces.append(parts[-1])
  return pieces


def _encode_row(tokenizer: Tokenizer, prompt: str, pieces: Sequence[str], seq_len: int,
                index: int) -> tuple[list[int], list[int], list[int]]:
  """``(prompt ids incl. BOS, completion ids incl. EOS, end index of each piece)``.

  Pieces are encoded one by one so that every step boundary is a token
  boundary (with the character tokenizer this equals encoding the whole
  completion). End indices are relative to the completion's first token.
  """
  p = [tokenizer.bos_id] + tokenizer.encode(prompt)
  c: list[int] = []
  ends = []
  for piece in pieces:
    c.extend(tokenizer.encode(piece))
    ends.append(len(c) - 1)
  c.append(tokenizer.eos_id)
  if len(p) + len(c) > seq_len:
    raise SequenceTooLongError(
        f"example {index} has {len(p) + len(c)} tokens, more than seq_len={seq_len}: "
        f"{(prompt + ''.join(pieces))[:100]!r}")
  return p, c, ends


def _empty_rows(tokenizer: Tokenizer, n: int, seq_len: int) -> dict[str, np.ndarray]:
  return {"tokens": np.full((n, seq_len), tokenizer.pad_id, np.int32),
          "token_mask": np.zeros((n, seq_len), bool),
          "loss_mask": np.zeros((n, seq_len), np.float32),
          "value_target": np.zeros((n, seq_len), np.float32),
          "value_mask": np.zeros((n, seq_len), np.float32)}


def _check_lengths(prompts: Sequence[str], completions: Sequence[str], name: str,
                   **per_example: Sequence | None) -> None:
  if len(prompts) != len(completions):
    raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
  if not prompts:
    raise ValueError(f"{name}: no examples (empty dataset or split)")
  for key, values in per_example.items():
    if values is not None and len(values) != len(prompts):
      raise ValueError(f"{name}: {len(values)} {key} for {len(prompts)} examples")


def encode_outcome_examples(tokenizer: Tokenizer, prompts: Sequence[str],
                            completions: Sequence[str], outcomes: Sequence[float],
                            seq_len: int, policy_targets: Sequence[bool] | None = None
                            ) -> dict[str, np.ndarray]:
  """Outcome-reward (ORM) examples: one value target, at the EOS token.

  Args:
    tokenizer: the tokenizer.
    prompts: ``N`` conditioning texts.
    completions: ``N`` solutions (no EOS).
    outcomes: ``N`` targets in ``[0, 1]`` (1.0 correct, 0.0 wrong).
    seq_len: static length T of every row.
    policy_targets: optional ``N`` flags; where True the completion and EOS
      are also policy targets (``loss_mask``). Default: no policy targets.

  Returns:
    ``tokens [N, T] int32``, ``token_mask [N, T] bool`` and
    ``loss_mask``/``value_target``/``value_mask`` ``[N, T] float32``;
    ``value_mask`` is 1 at the EOS of each row only.
  """
  _check_lengths(prompts, completions, "encode_outcome_examples", outcomes=outcomes,
                 policy_targets=policy_targets)
  out = _empty_rows(tokenizer, len(prompts), seq_len)
  for i, (prompt, completion) in enumerate(zip(prompts, completions)):
    p, c, _ = _encode_row(tokenizer, prompt, [completion] if completion else [], seq_len, i)
    end = len(p) + len(c)
    out["tokens"][i, :end] = p + c
    out["token_mask"][i, :end] = True
    if policy_targets is not None and policy_targets[i]:
      out["loss_mask"][i, len(p):end] = 1.0
    out["value_target"][i, end - 1] = outcomes[i]
    out["value_mask"][i, end - 1] = 1.0
  return out


def encode_step_value_examples(tokenizer: Tokenizer, prompts: Sequence[str],
                               completions: Sequence[str],
                               step_targets: Sequence[Sequence[float]], seq_len: int,
                               delimiter: str,
                               prompt_targets: Sequence[float] | None = None,
                               policy_targets: Sequence[bool] | None = None
                               ) -> dict[str, np.ndarray]:
  """Process-reward (PRM) examples: a value target at the end of each step.

  The steps of a completion are ``split_completion(completion, delimiter)``.
  Step ``j``'s target sits on the last token of its delimiter, i.e. on the
  state "prefix up to and including step j", which is where a search reads
  the PRM of an option ended by the delimiter. The last step's target sits on
  EOS instead (the state "this finished solution"), where a search reads a
  terminal node; with the usual completions (steps, then an answer line
  without a delimiter) that is also the end of the answer line.

  Args:
    tokenizer: the tokenizer.
    prompts: ``N`` conditioning texts.
    completions: ``N`` solutions (no EOS).
    step_targets: for each example, one target in ``[0, 1]`` per step
      (soft Monte Carlo labels or hard 0/1 labels).
    seq_len: static length T of every row.
    delimiter: the step delimiter (``Task.step_delimiter``).
    prompt_targets: optional ``N`` targets for the root state (the last prompt
      token, before any step), e.g. the fraction of the prompt's sampled
      solutions that are correct.
    policy_targets: optional ``N`` flags selecting examples whose completion
      and EOS are policy targets. Default: none.

  Returns:
    ``tokens [N, T] int32``, ``token_mask [N, T] bool`` and
    ``loss_mask``/``value_target``/``value_mask`` ``[N, T] float32``.
  """
  _check_lengths(prompts, completions, "encode_step_value_examples",
                 step_targets=step_targets, prompt_targets=prompt_targets,
                 policy_targets=policy_targets)
  out = _empty_rows(tokenizer, len(prompts), seq_len)
  for i, (prompt, completion) in enumerate(zip(prompts, completions)):
    pieces = split_completion(completion, delimiter)
    targets = np.asarray(step_targets[i], np.float32).reshape(-1)
    if len(targets) != len(pieces):
      raise ValueError(f"example {i} has {len(pieces)} steps but {len(targets)} step targets: "
                       f"{completion[:100]!r}")
    p, c, ends = _encode_row(tokenizer, prompt, pieces, seq_len, i)
    end = len(p) + len(c)
    out["tokens"][i, :end] = p + c
    out["token_mask"][i, :end] = True
    if policy_targets is not None and policy_targets[i]:
      out["loss_mask"][i, len(p):end] = 1.0
    if ends:
      positions = [len(p) + e for e in ends[:-1]] + [end - 1]   # last step: at EOS
      out["value_target"][i, positions] = targets
      out["value_mask"][i, positions] = 1.0
    if prompt_targets is not None:
      out["value_target"][i, len(p) - 1] = prompt_targets[i]
      out["value_mask"][i, len(p) - 1] = 1.0
  return out
