"""Countdown: reach a target from given numbers (a generalisation of Game of 24).

Each step combines two available numbers with ``+ - * /`` into a new one; the
two operands are used up and the result becomes available. Division must be
exact and every result a positive integer. Numbers may be left unused (as in
the game show), but there must be at least one step and the last step must
produce the target::

  question:       3 7 12 5 to 27
  data:           {"numbers": [3, 7, 12, 5], "target": 27,
                   "solution": [[12, "+", 3, 15], [15, "+", 7, 22], [22, "+", 5, 27]]}
  answer:         27
  demonstration:  12+3=15\\n15+7=22\\n22+5=27\\nA: 27

Generated solutions use every number, and their target is never one of the
input numbers nor reached before the last step.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from alphallm.tasks import parsing
from alphallm.tasks.registry import register
from alphallm.tasks.base import Problem, Task

# Completions longer than this are rejected unread.
MAX_COMPLETION_CHARS = 4096
# The most numbers a problem (and ``solve``) may have.
MAX_NUMBERS = 6
# Generator attempts per problem before the knobs are declared unsatisfiable.
_MAX_ATTEMPTS = 10_000
# Draws of (pair, op) per step before a solution attempt is restarted.
_MAX_STEP_DRAWS = 20
_QUESTION_RE = re.compile(r"([0-9]{1,12}(?: [0-9]{1,12}){1,5}) to ([0-9]{1,12})", re.ASCII)

Step = tuple[int, str, int, int]


@register
class CountdownTask(Task):
  """Reach the target by combining the given numbers, one operation per step.

  Knobs:
    num_numbers: how many numbers a problem gives (2..6).
    max_number: the numbers are drawn uniformly in ``1..max_number``.
    ops: the operations allowed, a subset of ``"+-*/"``.
    max_value: every result of the generated solution is in ``1..max_value``.
  """

  name = "countdown"
  answer_charset = "-0123456789"   # the answer is an integer
  answer_restates_last_result = True
  equation_steps = True

  def __init__(self, num_numbers: int = 4, max_number: int = 20, ops: str = "+-*/",
               max_value: int = 200):
    _check_int("num_numbers", num_numbers, 2, MAX_NUMBERS)
    _check_int("max_number", max_number, 1, 10**6)
    _check_int("max_value", max_value, 2, 10**9)
    _check_ops(ops)
    self.num_numbers = num_numbers
    self.max_number = max_number
    self.ops = ops
    self.max_value = max_value

  def generate(self, seed: int, num: int) -> list[Problem]:
    rng = np.random.default_rng(seed)
    return [self._draw_problem(rng) for _ in range(num)]

  def demonstration(self, problem: Problem) -> str:
    numbers, target = _instance_of(problem)
    solution = problem.data.get("solution")
    if solution is None:
      solution = solve(numbers, target, self.max_value, self.ops)
      if solution is None:
        raise ValueError(f"countdown problem {problem.question!r} has no solution")
    lines = [parsing.format_step(int(a), str(op), int(b), int(c)) + self.step_delimiter
             for a, op, b, c in solution]
    return "".join(lines) + f"{self.answer_prefix}{target}"

  def verify(self, problem: Problem, completion: str) -> bool:
    if not isinstance(completion, str) or len(completion) > MAX_COMPLETION_CHARS:
      return False
    try:
      numbers, target = _instance_of(problem)
    except (ValueError, TypeError):
      return False
    lines = self.split_steps(completion)
    if len(lines) < 2 or not lines[-1].startswith(self.answer_prefix):
      return False
    if parsing.parse_int(lines[-1][len(self.answer_prefix):].strip()) != target:
      return False
    steps = [parsing.parse_step(line) for line in lines[:-1]]
    if any(step is None for step in steps):
      return False
    return check_solution(numbers, target, steps, self.ops)

  def _draw_problem(self, rng: np.random.Generator) -> Problem:
    for _ in range(_MAX_ATTEMPTS):
      numbers = [int(x) for x in rng.integers(1, self.max_number + 1, size=self.num_numbers)]
      solution = self.draw_solution(rng, numbers)
      if solution is None:
        continue
      target = solution[-1][3]
      # Trivial if the target is given, or reached before the last step.
      if target in numbers or any(step[3] == target for step in solution[:-1]):
        continue
      return Problem(question=format_question(numbers, target), answer=str(target),
                     data={"numbers": numbers, "target": target,
                           "solution": [list(step) for step in solution]})
    raise ValueError(
        f"countdown knobs admit (almost) no problem: num_numbers={self.num_numbers}, "
        f"max_number={self.max_number}, ops={self.ops!r}, max_value={self.max_value}")

  def draw_solution(self, rng: np.random.Generator, numbers: Sequence[int]
                    ) -> list[Step] | None:
    """Combines random pairs of ``numbers`` until one is left (every result in
    ``1..max_value``), or None on a dead end. Also imagination's generator."""
    pool, solution = list(numbers), []
    while len(pool) > 1:
      for _ in range(_MAX_STEP_DRAWS):
        i = int(rng.integers(len(pool)))
        j = int(rng.integers(len(pool) - 1))
        if j >= i:  # A uniform ordered pair of distinct positions.
          j += 1
        op = self.ops[int(rng.integers(len(self.ops)))]
        a, b = pool[i], pool[j]
        if op in "-/" and a < b:
          a, b = b, a
        c = parsing.apply_op(a, op, b)
        if c is not None and 0 < c <= self.max_value:
          break
      else:
        return None
      pool = [x for k, x in enumerate(pool) if k not in (i, j)] + [c]
      solution.append((a, op, b, c))
    return solution


def format_question(numbers: Sequence[int], target: int) -> str:
  """The numbers, then the target, e.g. ``3 7 12 5 to 27``."""
  return f"{' '.join(str(n) for n in numbers)} to {target}"


def parse_question(question: str) -> tuple[list[int], int] | None:
  """Inverse of ``format_question`` (bounded), or None if malformed."""
  if not isinstance(question, str) or len(question) > 128:
    return None
  m = _QUESTION_RE.fullmatch(question)
  if m is None:
    return None
  return [int(n) for n in m.group(1).split(" ")], int(m.group(2))


def check_solution(numbers: Sequence[int], target: int, steps: Sequence[Step],
                   ops: str = parsing.OPS) -> bool:
  """Do ``steps`` reach ``target`` from ``numbers`` under the Countdown rules?

  Each step ``(a, op, b, c)`` must use an allowed op, be arithmetically exact,
  take both operands from the numbers currently available (a multiset: equal
  values need two copies), and give a positive result, which replaces them.
  There must be at least one step and the last one must give ``target``.
  """
  if not steps:
    return False
  available = collections.Counter(numbers)
  for a, op, b, c in steps:
    if op not in ops or c <= 0 or parsing.apply_op(a, op, b) != c:
      return False
    available[a] -= 1
    available[b] -= 1
    if available[a] < 0 or available[b] < 0:
      return False
    available[c] += 1
  return steps[-1][3] == target


def solve(numbers: Sequence[int], target: int, max_value: int,
          ops: str = parsing.OPS) -> list[Step] | None:
  """A solution of a Countdown instance, or None if none exists.

  Exhaustive depth-first search over pairs of available numbers, with every
  intermediate result a positive integer ``<= max_value`` and dead states
  memoised on the sorted multiset of available numbers. Bounded: at most
  ``MAX_NUMBERS`` numbers, so the search space is finite and small.

  Args:
    numbers: the given numbers, positive ints.
    target: the number to reach (with at least one step).
    max_value: bound on every intermediate result.
    ops: the allowed operations.

  Returns:
    Steps ``(a, op, b, c)`` whose last result is ``target``, or None.
  """
  numbers = [int(n) for n in numbers]
  if not 1 <= len(numbers) <= MAX_NUMBERS:
    raise ValueError(f"solve takes 1..{MAX_NUMBERS} numbers, got {len(numbers)}")
  if any(n <= 0 for n in numbers):
    raise ValueError(f"countdown numbers must be positive, got {numbers}")
  _check_ops(ops)
  dead: set[tuple[int, ...]] = set()
  return _search(tuple(sorted(numbers)), int(target), int(max_value), ops, dead)


def _search(pool: tuple[int, ...], target: int, max_value: int, ops: str,
            dead: set[tuple[int, ...]]) -> list[Step] | None:
  if len(pool) < 2 or pool in dead:
    return None
  children = []
  for i in range(len(pool)):
    if i > 0 and pool[i] == pool[i - 1]:
      continue  # Same smaller value as the previous i: same pairs.
    for j in range(i + 1, len(pool)):
      if j > i + 1 and pool[j] == pool[j - 1]:
        continue  # Same pair of values as the previous j.
      b, a = pool[i], pool[j]  # a >= b since pool is sorted.
      rest = pool[:i] + pool[i + 1:j] + pool[j + 1:]
      for op in ops:
        c = parsing.apply_op(a, op, b)
        if c is None or not 0 < c <= max_value:
          continue
        step = (a, op, b, c)
        if c == target:
          return [step]
        children.append((step, tuple(sorted(rest + (c,)))))
  for step, child in children:
    found = _search(child, target, max_value, ops, dead)
    if found is not None:
      return [step] + found
  dead.add(pool)
  return None


def _instance_of(problem: Problem) -> tuple[list[int], int]:
  """``(numbers, target)`` of ``problem``, from its data or else its question."""
  data: Any = problem.data
  if "numbers" in data and "target" in data:
    return [int(n) for n in data["numbers"]], int(data["target"])
  parsed = parse_question(problem.question)
  if parsed is None:
    raise ValueError(f"not a countdown question: {problem.question!r}")
  return parsed


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
    raise ValueError(f"knob {name} must be an int in [{lo}, {hi}], got {value!r}")


def _check_ops(ops: object) -> None:
  if (not isinstance(ops, str) or not ops or len(set(ops)) != len(ops)
      or any(op not in parsing.OPS for op in ops)):
    raise ValueError(f"knob ops must be a non-empty string of distinct characters from "
                     f"{parsing.OPS!r}, got {ops!r}")
