"""Rule-based imagination of the built-in synthetic tasks (arithmetic, Countdown).

Importing this module registers them with ``alphallm.imagination``
(``register_task_imagination``), as a user's task file registers its own
rules. ``alphallm.imagination``'s docstring describes the rewrites.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from alphallm.imagination import (BAD_SEED, INVALID, TRIVIAL, UNPARSEABLE, UNSOLVABLE,
                                  Candidate, TaskImagination, mask as _mask, origin as _origin,
                                  register_task_imagination)
from alphallm.tasks import arithmetic, countdown, parsing
from alphallm.tasks.base import Problem

# Backward rewrites draw at most this many operand values per step.
_MAX_BACKWARD_OPERANDS = 256

# ----------------------------------------------------------------------------
# Arithmetic.

Chain = list[tuple[str, int]]


def _arith_chain(problem: Problem) -> tuple[int, Chain] | None:
  """The seed's ``(start, chain)``, from its data or its question, or None."""
  try:
    data: Any = problem.data
    if "start" in data and "ops" in data:
      return int(data["start"]), [(str(op), int(b)) for op, b in data["ops"]]
  except (TypeError, ValueError):
    return None
  return arithmetic.parse_question(problem.question)


def arithmetic_value(task: arithmetic.ArithmeticTask, start: int, chain: Sequence[tuple[str, int]]
                     ) -> int | None:
  """The answer of a chain if it is valid under ``task``'s knobs, else None.

  Valid: ``min_ops..max_ops`` operations from ``task.ops``; start and
  operands in ``1..max_operand``; every value in ``0..max_value``; exact
  division.
  """
  if not task.min_ops <= len(chain) <= task.max_ops:
    return None
  if any(op not in task.ops for op, _ in chain):
    return None
  if not all(1 <= n <= task.max_operand for n in [start] + [b for _, b in chain]):
    return None
  if not 0 <= start <= task.max_value:
    return None
  value = start
  for op, b in chain:
    value = parsing.apply_op(value, op, b)
    if value is None or not 0 <= value <= task.max_value:
      return None
  return value


def _arith_problem(task: arithmetic.ArithmeticTask, start: int, chain: Chain,
                   origin: dict[str, Any]) -> Candidate:
  value = arithmetic_value(task, start, chain)
  if value is None:
    return INVALID
  return Problem(question=arithmetic.format_question(start, chain), answer=str(value),
                 data={"start": start, "ops": [[op, b] for op, b in chain], "origin": origin})


def _arith_perturb(task: arithmetic.ArithmeticTask, seed: Problem,
                   rng: np.random.Generator) -> Candidate:
  parsed = _arith_chain(seed)
  if parsed is None:
    return BAD_SEED
  start, chain = parsed
  numbers = [start] + [b for _, b in chain]
  mask = _mask(rng, len(numbers))
  new = [int(rng.integers(1, task.max_operand + 1)) if m else n for m, n in zip(mask, numbers)]
  new_chain = [(op, b) for (op, _), b in zip(chain, new[1:])]
  return _arith_problem(task, new[0], new_chain, _origin("perturb", seed))


def _invert(value: int, op: str, b: int) -> int | None:
  """The ``x`` with ``x op b == value`` exactly, or None."""
  if op == "+":
    x = value - b
  elif op == "-":
    x = value + b
  elif op == "*":
    if value % b:
      return None
    x = value // b
  else:
    x = value * b
  return x if parsing.apply_op(x, op, b) == value else None


def _backward_options(value: int, ops: str, operands: Sequence[int], lo: int, hi: int
                      ) -> list[tuple[int, str, int]]:
  """Every ``(x, op, b)`` with ``x op b == value`` and ``lo <= x <= hi``."""
  out = []
  for op in ops:
    for b in operands:
      x = _invert(value, op, b)
      if x is not None and lo <= x <= hi:
        out.append((x, op, b))
  return out


def _arith_backward(task: arithmetic.ArithmeticTask, seed: Problem,
                    rng: np.random.Generator) -> Candidate:
  """A new forward chain whose answer is the seed's answer (see the module doc)."""
  target = parsing.parse_int(seed.answer)
  parsed = _arith_chain(seed)
  if target is None or not 0 <= target <= task.max_value:
    return BAD_SEED
  num_ops = len(parsed[1]) if parsed is not None else 0
  if not task.min_ops <= num_ops <= task.max_ops:
    num_ops = int(rng.integers(task.min_ops, task.max_ops + 1))
  if task.max_operand <= _MAX_BACKWARD_OPERANDS:
    operands = range(1, task.max_operand + 1)
  else:
    operands = sorted(int(b) + 1 for b in rng.choice(task.max_operand, _MAX_BACKWARD_OPERANDS,
                                                     replace=False))
  value, reversed_chain = target, []
  for i in range(num_ops):
    first = i == num_ops - 1
    lo, hi = (1, min(task.max_operand, task.max_value)) if first else (0, task.max_value)
    options = _backward_options(value, task.ops, operands, lo, hi)
    if not options:
      return INVALID
    value, op, b = options[int(rng.integers(len(options)))]
    reversed_chain.append((op, b))
  chain = reversed_chain[::-1]
  problem = _arith_problem(task, value, chain, _origin("backward", seed))
  if isinstance(problem, Problem) and problem.answer != str(target):
    return INVALID  # Cannot happen: every step was inverted exactly.
  return problem


def _arith_from_question(task: arithmetic.ArithmeticTask, question: str) -> Candidate:
  parsed = arithmetic.parse_question(question)
  if parsed is None:
    return UNPARSEABLE
  start, chain = parsed
  return _arith_problem(task, start, chain, _origin("policy", None))


def _arith_key(question: str) -> Hashable | None:
  parsed = arithmetic.parse_question(question)
  if parsed is None:
    return None
  start, chain = parsed
  (op, b), rest = chain[0], tuple(chain[1:])
  a, b = (min(start, b), max(start, b)) if op in "+*" else (start, b)
  return ("arithmetic", a, op, b, rest)


# ----------------------------------------------------------------------------
# Countdown.

Step = tuple[int, str, int, int]


def _cd_instance(problem: Problem) -> tuple[list[int], int] | None:
  """The seed's ``(numbers, target)``, from its data or its question, or None."""
  try:
    data: Any = problem.data
    if "numbers" in data and "target" in data:
      inst = [int(n) for n in data["numbers"]], int(data["target"])
    else:
      inst = countdown.parse_question(problem.question)
  except (TypeError, ValueError):
    return None
  if inst is None or not all(n >= 1 for n in inst[0]):
    return None
  return inst


def _cd_problem(task: countdown.CountdownTask, numbers: list[int], target: int,
                solution: Sequence[Step] | None, origin: dict[str, Any]) -> Candidate:
  """A Countdown problem, checked against the knobs and the Countdown rules."""
  if len(numbers) != task.num_numbers or not all(1 <= n <= task.max_number for n in numbers):
    return INVALID
  if not 1 <= target <= task.max_value:
    return INVALID
  if target in numbers:
    return TRIVIAL
  if solution is None:
    return UNSOLVABLE
  solution = [tuple(s) for s in solution]
  if (not countdown.check_solution(numbers, target, solution, task.ops)
      or any(s[3] > task.max_value for s in solution)):
    return INVALID
  if any(s[3] == target for s in solution[:-1]):
    return TRIVIAL
  return Problem(question=countdown.format_question(numbers, target), answer=str(target),
                 data={"numbers": list(numbers), "target": target,
                       "solution": [list(s) for s in solution], "origin": origin})


def _cd_seed_solution(task: countdown.CountdownTask, seed: Problem, numbers: list[int],
                      target: int) -> list[Step] | None:
  stored = seed.data.get("solution") if isinstance(seed.data, Mapping) else None
  try:
    steps = [(int(a), str(op), int(b), int(c)) for a, op, b, c in stored or []]
  except (TypeError, ValueError):
    steps = []
  if steps and countdown.check_solution(numbers, target, steps, task.ops):
    return steps
  return countdown.solve(numbers, target, task.max_value, task.ops)


def _cd_perturb(task: countdown.CountdownTask, seed: Problem,
                rng: np.random.Generator) -> Candidate:
  inst = _cd_instance(seed)
  if inst is None or len(inst[0]) != task.num_numbers:
    return BAD_SEED
  numbers, target = inst
  mask = _mask(rng, len(numbers))
  new = [int(rng.integers(1, task.max_number + 1)) if m else n for m, n in zip(mask, numbers)]
  if target not in new and 1 <= target <= task.max_value:
    solution = countdown.solve(new, target, task.max_value, task.ops)
    if solution is not None:
      return _cd_problem(task, new, target, solution, _origin("perturb", seed))
  solution = task.draw_solution(rng, new)
  if solution is None:
    return UNSOLVABLE
  origin = {**_origin("perturb", seed), "new_target": True}
  return _cd_problem(task, new, solution[-1][3], solution, origin)


def _dependencies(numbers: Sequence[int], steps: Sequence[Step], k: int) -> list[Step]:
  """The steps among ``steps[:k + 1]`` that step ``k``'s result depends on.

  Falls back to the whole prefix ``steps[:k + 1]`` if an operand is missing
  (only possible for an invalid solution).
  """
  pool: list[tuple[int, int | None]] = [(n, None) for n in numbers]  # (value, producing step)
  deps: list[set[int]] = []
  for j, (a, _, b, c) in enumerate(steps[:k + 1]):
    used = set()
    for value in (a, b):
      idx = next((i for i, (v, _) in enumerate(pool) if v == value), None)
      if idx is None:
        return list(steps[:k + 1])
      _, producer = pool.pop(idx)
      if producer is not None:
        used.add(producer)
    deps.append(used)
    pool.append((c, j))
  needed, frontier = set(), [k]
  while frontier:
    j = frontier.pop()
    if j not in needed:
      needed.add(j)
      frontier.extend(deps[j])
  return [steps[j] for j in sorted(needed)]


def _cd_backward(task: countdown.CountdownTask, seed: Problem,
                 rng: np.random.Generator) -> Candidate:
  """An intermediate value of a solution of the seed's numbers becomes the target."""
  inst = _cd_instance(seed)
  if inst is None or len(inst[0]) != task.num_numbers:
    return BAD_SEED
  numbers, target = inst
  solution = None
  if rng.random() < 0.5:
    solution = task.draw_solution(rng, numbers)
  if solution is None:
    solution = _cd_seed_solution(task, seed, numbers, target)
  if solution is None or not countdown.check_solution(numbers, solution[-1][3], solution,
                                                      task.ops):
    return UNSOLVABLE
  reached: set[int] = set()
  choices = []
  for k, step in enumerate(solution[:-1]):
    if step[3] not in numbers and step[3] not in reached:
      choices.append(k)
    reached.add(step[3])
  if not choices:
    return TRIVIAL
  k = choices[int(rng.integers(len(choices)))]
  steps = _dependencies(numbers, solution, k)
  if not countdown.check_solution(numbers, solution[k][3], steps, task.ops):
    steps = list(solution[:k + 1])  # A prefix of a valid solution is valid.
  return _cd_problem(task, numbers, solution[k][3], steps, _origin("backward", seed))


def _cd_from_question(task: countdown.CountdownTask, question: str) -> Candidate:
  parsed = countdown.parse_question(question)
  if parsed is None or countdown.format_question(*parsed) != question:
    return UNPARSEABLE
  numbers, target = parsed
  if (len(numbers) != task.num_numbers or not all(1 <= n <= task.max_number for n in numbers)
      or not 1 <= target <= task.max_value):
    return INVALID
  if target in numbers:
    return TRIVIAL
  solution = countdown.solve(numbers, target, task.max_value, task.ops)
  return _cd_problem(task, numbers, target, solution, _origin("policy", None))


def _cd_key(question: str) -> Hashable | None:
  parsed = countdown.parse_question(question)
  if parsed is None:
    return None
  numbers, target = parsed
  return ("countdown", tuple(sorted(numbers)), target)


register_task_imagination("arithmetic", TaskImagination(
    perturb=_arith_perturb, backward=_arith_backward, from_question=_arith_from_question,
    key=_arith_key))
register_task_imagination("countdown", TaskImagination(
    perturb=_cd_perturb, backward=_cd_backward, from_question=_cd_from_question,
    key=_cd_key))


