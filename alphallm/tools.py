"""Tool critics that run inside the compiled search: a step calculator.

``make_calculator_critic(tokenizer)`` is a jittable ``CriticFn`` (the
signature of ``search.mcts.Critics``' PRM and ORM slots). It reads every
line of a sequence that has the shape of an arithmetic step, ``a<op>b=c``
with op in ``+ - * /`` and unsigned integers, and checks the arithmetic
exactly, on token ids, with a ``lax.scan`` state machine: no host call, no
text, no eval. A sequence scores 0.0 if any step is wrong and 1.0 otherwise
(lines that are not steps, e.g. the question or the answer line, are not
judged). It never sees an answer key: it checks the model's own arithmetic,
like the paper's tool-augmented ORM.

With ``strict`` (the default; for tasks whose solution lines are equation
steps, ``Task.equation_steps``) a line that starts with a digit is an
attempted step, and one that is not a well-formed ``a<op>b=c`` (``21*4=2C2``,
``16*5=``) counts as wrong: otherwise a search guided by the calculator learns
to write malformed steps, which nothing judges.

Only finished lines are judged: a line ended by a newline or by EOS. The last
line of a prefix (a search node ``...\n3*7=2`` on its way to ``21``, or an
option cut at its length limit) is left open.

The host-side twin for text is ``tasks.parsing.check_step_line`` (a decoded
completion is finished: its last line ended at EOS); the two agree on every
line (tested). Numbers longer than ``MAX_DIGITS`` digits are
not judged, which keeps every product inside int32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from alphallm.tasks import parsing
from alphallm.tokenizer import Tokenizer

MAX_DIGITS = parsing.CALCULATOR_MAX_DIGITS
# Character classes of the state machine.
_OPS = "+-*/"
_EQ, _NL, _OTHER = 14, 15, 16   # digits are 0..9, ops 10..13
# The end of the real tokens (padding, and past the last token): it closes the
# last line without judging it, since a prefix's last line may still continue.
_OPEN = 17


def char_classes(tokenizer: Tokenizer) -> np.ndarray:
  """``[V]`` class of every token id (a token must be one character to be a digit/op)."""
  classes = np.full((tokenizer.vocab_size,), _OTHER, np.int32)
  for i in range(tokenizer.vocab_size):
    if i in (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id):
      classes[i] = _NL  # special tokens begin or end a line
      continue
    text = tokenizer.decode([i])
    if len(text) != 1:
      continue
    if text.isdigit() and text.isascii():
      classes[i] = int(text)
    elif text in _OPS:
      classes[i] = 10 + _OPS.index(text)
    elif text == "=":
      classes[i] = _EQ
    elif text == "\n":
      classes[i] = _NL
  return classes


def _check(a, op, b, c):
  """Is ``a op b == c`` (exact integer arithmetic; division only when exact)?"""
  return jnp.select(
      [op == 0, op == 1, op == 2, op == 3],
      [a + b == c, a - b == c, a * b == c, (b != 0) & (a == b * c)], False)


def count_wrong_steps(classes: Int[Array, "V"], tokens: Int[Array, "S"], mask: Bool[Array, "S"],
                      strict: bool = True) -> tuple[Int[Array, ""], Int[Array, ""]]:
  """``(steps_checked, steps_wrong)`` of one sequence (``strict``: see the module doc)."""
  # Past the real tokens a line is open: a prefix's last line (``3*7=2`` on its
  # way to ``21``) is not judged; a line ended by a newline or EOS is.
  cls = jnp.where(mask, classes[tokens], _OPEN)

  # Carry: field (0: a, 1: b, 2: c), numbers, digit counts, op, line still well
  # formed, line started with a digit, at a line start, a number overflowed while
  # the line was well formed, and the totals.
  def step(carry, c):
    field, num, ndig, op, ok, started, fresh, overflow, checked, wrong = carry
    is_digit = c < 10
    is_op = (c >= 10) & (c < 14)
    is_eq = c == _EQ
    is_end = (c == _NL) | (c == _OPEN)
    # Finish a line.
    complete = ok & (field == 2) & (ndig[2] > 0)
    judged = (c == _NL) & (complete | (strict & started & ~overflow))
    correct = complete & _check(num[0], op, num[1], num[2])
    checked = checked + judged.astype(jnp.int32)
    wrong = wrong + (judged & ~correct).astype(jnp.int32)
    # Advance inside a line.
    digit_ok = is_digit & (ndig[field] < MAX_DIGITS)
    overflow = overflow | (ok & is_digit & ~digit_ok)
    new_num = num.at[field].set(jnp.where(digit_ok, num[field] * 10 + c, num[field]))
    new_ndig = ndig.at[field].set(ndig[field] + digit_ok.astype(jnp.int32))
    op_ok = is_op & (field == 0) & (ndig[0] > 0)
    eq_ok = is_eq & (field == 1) & (ndig[1] > 0)
    new_ok = ok & (digit_ok | op_ok | eq_ok)
    new_field = jnp.where(op_ok, 1, jnp.where(eq_ok, 2, field))
    new_op = jnp.where(op_ok, c - 10, op)
    started = jnp.where(fresh, is_digit, started)
    zeros = jnp.zeros((3,), jnp.int32)
    false = jnp.bool_(False)
    carry = (jnp.where(is_end, 0, new_field), jnp.where(is_end, zeros, new_num),
             jnp.where(is_end, zeros, new_ndig), jnp.where(is_end, 0, new_op),
             jnp.where(is_end, True, new_ok), jnp.where(is_end, false, started), is_end,
             jnp.where(is_end, false, overflow), checked, wrong)
    return carry, None

  init = (jnp.int32(0), jnp.zeros((3,), jnp.int32), jnp.zeros((3,), jnp.int32), jnp.int32(0),
          jnp.bool_(True), jnp.bool_(False), jnp.bool_(True), jnp.bool_(False), jnp.int32(0),
          jnp.int32(0))
  # The end of the sequence leaves its last line open.
  cls = jnp.concatenate([cls, jnp.array([_OPEN], jnp.int32)])
  carry, _ = jax.lax.scan(step, init, cls)
  return carry[8], carry[9]


def make_calculator_critic(tokenizer: Tokenizer, strict: bool = True):
  """A jittable ``CriticFn``: 0.0 if any arithmetic step in the sequence is wrong, else 1.0.

  Its ``params`` argument is ignored (a tool has none). ``strict``: lines that
  start with a digit must be well-formed steps (see the module doc).
  """
  classes = jnp.asarray(char_classes(tokenizer))

  def critic(params, tokens: Int[Array, "N S"], mask: Bool[Array, "N S"]) -> Float[Array, "N"]:
    del params
    _, wrong = jax.vmap(lambda t, m: count_wrong_steps(classes, t, m, strict))(tokens, mask)
    return (wrong == 0).astype(jnp.float32)

  return critic


def make_answer_format_critic(tokenizer: Tokenizer, answer_prefix: str, charset: str,
                              restates_last_result: bool = False):
  """A jittable ``CriticFn``: 0.0 if the sequence's answer line is malformed, else 1.0.

  The answer line is the first occurrence of ``answer_prefix``' ids; what
  follows it to the end of the real tokens (a final EOS excepted) must be
  non-empty and made only of tokens whose text uses ``charset``
  (``Task.answer_charset``, e.g. an integer: ``"-0123456789"``). A sequence
  without an answer line is not judged (1.0). With ``restates_last_result``
  (``Task.answer_restates_last_result``) the answer must also be the text
  after the last ``=`` of the line before it, when there is one. Its
  ``params`` are ignored.
  """
  prefix = np.asarray(tokenizer.encode(answer_prefix), np.int32)
  allowed = np.zeros((tokenizer.vocab_size,), bool)
  for i in range(tokenizer.vocab_size):
    if i in (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id):
      continue
    text = tokenizer.decode([i])
    allowed[i] = bool(text) and all(ch in charset for ch in text)
  prefix_j, allowed_j, eos = jnp.asarray(prefix), jnp.asarray(allowed), tokenizer.eos_id
  q = int(prefix.shape[0])
  eq_ids = [i for i in range(tokenizer.vocab_size) if tokenizer.decode([i]) == "="]
  eq_id = eq_ids[0] if eq_ids else -1

  def row(t: Int[Array, "S"], m: Bool[Array, "S"]) -> Float[Array, ""]:
    s = t.shape[0]
    idx = jnp.arange(s)
    starts = m & (idx + q <= s)
    for k in range(q):
      starts = starts & (jnp.roll(t, -k) == prefix_j[k]) & jnp.roll(m, -k)
    has = jnp.any(starts)
    j = jnp.min(jnp.where(starts, idx, s))
    after = (idx >= j + q) & m & (t != eos)
    good = jnp.all(jnp.where(after, allowed_j[t], True)) & jnp.any(after)
    if restates_last_result and eq_id >= 0:
      e = jnp.max(jnp.where((idx < j) & m & (t == eq_id), idx, -1))
      rhs_len = (j - 1) - (e + 1)                  # the newline before the answer line
      n_after = after.sum()
      a = t[jnp.clip(e + 1 + idx, 0, s - 1)]
      b = t[jnp.clip(j + q + idx, 0, s - 1)]
      same = (rhs_len == n_after) & jnp.all(jnp.where(idx < rhs_len, a == b, True))
      good = good & ((e < 0) | same)
    return jnp.where(has & ~good, 0.0, 1.0)

  def critic(params, tokens: Int[Array, "N S"], mask: Bool[Array, "N S"]) -> Float[Array, "N"]:
    del params
    return jax.vmap(row)(tokens, mask.astype(bool))

  return critic


def make_task_checker(tokenizer: Tokenizer, task, calculator: bool = True):
  """The task's in-graph step checker: the calculator (``calculator``) times the
  answer-format check (when ``task.answer_charset`` is set); None if neither applies."""
  parts = []
  if calculator:
    parts.append(make_calculator_critic(tokenizer))
  charset = getattr(task, "answer_charset", None)
  if charset:
    parts.append(make_answer_format_critic(
        tokenizer, task.answer_prefix, charset,
        bool(getattr(task, "answer_restates_last_result", False))))
  if not parts:
    return None
  if len(parts) == 1:
    return parts[0]

  def checker(params, tokens, mask):
    out = parts[0](params, tokens, mask)
    for p in parts[1:]:
      out = out * p(params, tokens, mask)
    return out

  return checker
