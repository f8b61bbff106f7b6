"""Multi-step arithmetic: apply a chain of operations, one per step.

A problem is a start number and a chain of operations applied left to right,
written fully parenthesised::

  question:       ((7+5)*3)-4
  data:           {"start": 7, "ops": [["+", 5], ["*", 3], ["-", 4]]}
  answer:         32
  demonstration:  7+5=12\\n12*3=36\\n36-4=32\\nA: 32

The verifier checks the outcome only: the answer line must state the answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from alphallm.tasks import parsing
from alphallm.tasks.registry import register
from alphallm.tasks.base import Problem, Task

# Completions longer than this are rejected unread.
MAX_COMPLETION_CHARS = 4096
# Generator attempts per problem before the knobs are declared unsatisfiable.
_MAX_ATTEMPTS = 50_000
# Question tokens: numbers and operators (parentheses are implied by the order).
_QUESTION_TOKEN_RE = re.compile(r"[0-9]{1,12}|[-+*/]", re.ASCII)
_QUESTION_RE = re.compile(r"[0-9()+\-*/]{1,512}", re.ASCII)

Chain = tuple[int, list[tuple[str, int]]]


@register
class ArithmeticTask(Task):
  """Evaluate a parenthesised chain of operations, one operation per step.

  Knobs:
    min_ops, max_ops: the number of operations is drawn uniformly in
      ``[min_ops, max_ops]``.
    max_operand: the start number and every operand are in ``1..max_operand``.
    ops: the operations to draw from, a subset of ``"+-*/"`` (division is only
      drawn where exact).
    max_value: every intermediate result is in ``0..max_value``; chains that
      leave that range are redrawn.
  """

  name = "arithmetic"
  answer_charset = "-0123456789"   # the answer is an integer
  answer_restates_last_result = True
  equation_steps = True

  def __init__(self, min_ops: int = 2, max_ops: int = 4, max_operand: int = 9,
               ops: str = "+-*", max_value: int = 99):
    _check_int("min_ops", min_ops, 1, 64)
    _check_int("max_ops", max_ops, min_ops, 64)
    _check_int("max_operand", max_operand, 1, 10**6)
    _check_int("max_value", max_value, 1, 10**9)
    _check_ops(ops)
    self.min_ops = min_ops
    self.max_ops = max_ops
    self.max_operand = max_operand
    self.ops = ops
    self.max_value = max_value

  def generate(self, seed: int, num: int) -> list[Problem]:
    rng = np.random.default_rng(seed)
    return [self._problem(*self._draw_chain(rng)) for _ in range(num)]

  def demonstration(self, problem: Problem) -> str:
    start, chain = _chain_of(problem)
    lines, value = [], start
    for op, b in chain:
      result = parsing.apply_op(value, op, b)
      if result is None:
        raise ValueError(f"arithmetic problem {problem.question!r} has an undefined step "
                         f"{value}{op}{b}")
      lines.append(parsing.format_step(value, op, b, result) + self.step_delimiter)
      value = result
    return "".join(lines) + f"{self.answer_prefix}{value}"

  def verify(self, problem: Problem, completion: str) -> bool:
    if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
      return False
    expected = parsing.parse_int(problem.answer)
    got = parsing.parse_int(self.extract_answer(completion))
    return expected is not None and got is not None and got == expected

  def _draw_chain(self, rng: np.random.Generator) -> Chain:
    """A random valid chain: start number and (op, operand) pairs.

    Rejection sampling (an invalid prefix is abandoned early), so the chain is
    uniform among the valid chains of its length.
    """
    num_ops = int(rng.integers(self.min_ops, self.max_ops + 1))
    for _ in range(_MAX_ATTEMPTS):
      start = int(rng.integers(1, self.max_operand + 1))
      value, chain = start, []
      while value is not None and 0 <= value <= self.max_value and len(chain) < num_ops:
        op = self.ops[int(rng.integers(len(self.ops)))]
        b = int(rng.integers(1, self.max_operand + 1))
        value = parsing.apply_op(value, op, b)
        chain.append((op, b))
      if len(chain) == num_ops and _chain_value(start, chain, self.max_value) is not None:
        return start, chain
    raise ValueError(
        f"arithmetic knobs admit (almost) no chain of {num_ops} ops within 0..{self.max_value}: "
        f"ops={self.ops!r}, max_operand={self.max_operand}; raise max_value or change ops")

  def _problem(self, start: int, chain: list[tuple[str, int]]) -> Problem:
    value = _chain_value(start, chain, self.max_value)
    return Problem(question=format_question(start, chain), answer=str(value),
                   data={"start": start, "ops": [[op, b] for op, b in chain]})


def format_question(start: int, chain: Sequence[tuple[str, int]]) -> str:
  """The fully parenthesised expression, e.g. ``((7+5)*3)-4``."""
  text = str(start)
  for i, (op, b) in enumerate(chain):
    text = f"({text}){op}{b}" if i > 0 else f"{text}{op}{b}"
  return text


def parse_question(question: str) -> Chain | None:
  """Inverse of ``format_question`` (bounded), or None if malformed."""
  if not isinstance(question, str) or _QUESTION_RE.fullmatch(question) is None:
    return None
  tokens = _QUESTION_TOKEN_RE.findall(question.replace("(", "").replace(")", ""))
  if len(tokens) < 3 or len(tokens) % 2 == 0:
    return None
  start = parsing.parse_int(tokens[0])
  chain = []
  for op, b in zip(tokens[1::2], tokens[2::2]):
    operand = parsing.parse_int(b)
    if op not in parsing.OPS or operand is None:
      return None
    chain.append((op, operand))
  if start is None or format_question(start, chain) != question:
    return None
  return start, chain


def _chain_of(problem: Problem) -> Chain:
  """The chain of ``problem``, from its data or else from its question."""
  data: Any = problem.data
  if "start" in data and "ops" in data:
    return int(data["start"]), [(str(op), int(b)) for op, b in data["ops"]]
  parsed = parse_question(problem.question)
  if parsed is None:
    raise ValueError(f"not an arithmetic question: {problem.question!r}")
  return parsed


def _chain_value(start: int, chain: Sequence[tuple[str, int]], max_value: int) -> int | None:
  """The final value, or None if a step is undefined or leaves ``0..max_value``."""
  if not 0 <= start <= max_value:
    return None
  value = start
  for op, b in chain:
    value = parsing.apply_op(value, op, b)
    if value is None or not 0 <= value <= max_value:
      return None
  return value


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
    raise ValueError(f"knob {name} must be an int in [{lo}, {hi}], got {value!r}")


def _check_ops(ops: object) -> None:
  if (not isinstance(ops, str) or not ops or len(set(ops)) != len(ops)
      or any(op not in parsing.OPS for op in ops)):
    raise ValueError(f"knob ops must be a non-empty string of distinct characters from "
                     f"{parsing.OPS!r}, got {ops!r}")
