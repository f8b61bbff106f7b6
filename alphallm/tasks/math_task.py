"""MATH: competition mathematics problems from the real dataset.

A problem is one example of a dataset split (``alphallm.datasets.math_dataset``)::

  question:       What is $\\frac{1}{2} + \\frac{1}{3}$?
  answer:         \\frac{5}{6}            (the reference solution's last box)
  data:           {"solution": ..., "level": 2, "type": "Prealgebra", "path": ...}

Options follow the paper's rule for MATH (``option_boundaries``): an option
ends at a blank line where a formula pattern matched; otherwise it continues
to the next blank line. Demonstrations are written so that the step
delimiter ``"\\n\\n"`` (a blank line) occurs exactly at option ends: the
paragraphs of one option are joined by single newlines. The last step is the
answer line ``A: <answer>``.

The verifier is ``graders.grade_math``: the last box (or answer line) of the
completion must be equivalent to the reference answer (normalised strings,
exact rationals, tuples elementwise).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from alphallm import graders
from alphallm.datasets import math_dataset
from alphallm.tasks.registry import register
from alphallm.tasks.base import Problem, Task

# Texts longer than this have no options (``option_boundaries`` returns []).
MAX_OPTION_TEXT_CHARS = graders.MAX_TEXT_CHARS
# A blank line: a newline, then one or more lines holding only spaces / tabs.
_BLANK_LINE_RE = re.compile(r"\n(?:[ \t]{0,64}\n)+")
# The formula pattern: a relation (an equation or inequality) or a boxed answer.
FORMULA_RE = re.compile(
    r"=|<|>|\\(?:le|ge|leq|geq|ne|neq|approx|equiv|lt|gt|boxed)(?![A-Za-z])")
_MAX_ANSWER_CHARS = 256


def option_boundaries(text: str) -> list[int]:
  """End offsets of the options of ``text``, under the paper's MATH rule.

  The rule: an option ends at a blank line (a run of lines that are empty or
  hold only spaces and tabs) if the formula pattern ``FORMULA_RE`` matched
  somewhere in the option so far; otherwise the option continues past that
  blank line to the next one. The formula pattern is a relation
  (``=``, ``<``, ``>``, ``\\le``, ``\\ge``, ``\\neq``, ``\\approx``,
  ``\\equiv``, ...) or a ``\\boxed`` answer. The text's end always ends the
  last option.

  Args:
    text: a solution (or a prefix of one).

  Returns:
    Strictly increasing offsets; option ``i`` is ``text[b[i-1]:b[i]]`` (with
    ``b[-1] = 0``) and includes the blank line that ends it. The last offset
    is ``len(text)``. ``[]`` for an empty text or one longer than
    ``MAX_OPTION_TEXT_CHARS``.
  """
  if not isinstance(text, str) or not text or len(text) > MAX_OPTION_TEXT_CHARS:
    return []
  bounds = []
  searched = 0  # The option's text before this has no formula: search on from here.
  for m in _BLANK_LINE_RE.finditer(text):
    if FORMULA_RE.search(text, searched, m.start()):
      bounds.append(m.end())
    searched = m.end()
  if not bounds or bounds[-1] < len(text):
    bounds.append(len(text))
  return bounds


def split_options(text: str) -> list[str]:
  """The options of ``text`` (``option_boundaries``), each with its blank line."""
  bounds = option_boundaries(text)
  return [text[a:b] for a, b in zip([0] + bounds[:-1], bounds)]


@register
class MATHTask(Task):
  """MATH problems sampled from a dataset split.

  Knobs:
    data_dir: the MATH source directory (``train/``, ``test/``; Hendrycks
      format); default ``$ALPHALLM_MATH_DIR``, else
      ``<repo>/../shared/data/math``.
    split: ``"train"`` or ``"test"``.
    levels: keep only these difficulty levels (1..5); None keeps all.
    types: keep only these subjects (e.g. ``["Algebra"]``); None keeps all.
    tfds_dir: read the split through TFDS (prepared there once, read with
      ``as_data_source``); None reads the JSON files directly.
    skip_malformed: skip malformed problem files instead of raising.
  """

  name = "math"
  step_delimiter = "\n\n"

  def __init__(self, data_dir: str | None = None, split: str = "test",
               levels: Sequence[int] | None = None, types: Sequence[str] | None = None,
               tfds_dir: str | None = None, skip_malformed: bool = False):
    self.split = split
    examples = math_dataset.load(split, data_dir, tfds_dir, skip_malformed)
    keep_levels = None if levels is None else {int(x) for x in levels}
    keep_types = None if types is None else {str(t) for t in types}
    self._examples = [ex for ex in examples
                      if (keep_levels is None or ex.level in keep_levels)
                      and (keep_types is None or ex.type in keep_types)]
    if not self._examples:
      raise ValueError(f"math split {split!r} has no problems with levels={levels} "
                       f"types={types}")

  def __len__(self) -> int:
    return len(self._examples)

  def generate(self, seed: int, num: int) -> list[Problem]:
    """``num`` distinct problems of the split, drawn without replacement by ``seed``."""
    if not 0 <= num <= len(self._examples):
      raise ValueError(f"math split {self.split!r} has {len(self._examples)} problems; "
                       f"cannot draw {num}")
    rows = np.random.default_rng(seed).choice(len(self._examples), size=num, replace=False)
    return [self._problem(self._examples[int(i)]) for i in rows]

  def prompt(self, problem: Problem) -> str:
    return f"Q: {problem.question}{self.step_delimiter}"

  def demonstration(self, problem: Problem) -> str:
    solution = problem.data.get("solution")
    if not isinstance(solution, str):
      raise ValueError(f"math problem {problem.uid} has no reference solution in its data")
    options = [_join_paragraphs(o) for o in split_options(solution.strip())]
    return "".join(o + self.step_delimiter for o in options) + self.answer_prefix + problem.answer

  def extract_answer(self, completion: str) -> str | None:
    answer = graders.canonical_math_answer(graders.extract_math_answer(completion))
    return answer if answer is not None and len(answer) <= _MAX_ANSWER_CHARS else None

  def verify(self, problem: Problem, completion: str) -> bool:
    return graders.grade_math(completion, problem.answer)

  def _problem(self, ex: math_dataset.MATHExample) -> Problem:
    return Problem(question=ex.problem, answer=ex.answer,
                   data={"solution": ex.solution, "level": ex.level, "type": ex.type,
                         "path": ex.path, "split": self.split})


def _join_paragraphs(option: str) -> str:
  """One option's paragraphs joined by single newlines (no blank line inside)."""
  return "\n".join(p.strip("\n") for p in _BLANK_LINE_RE.split(option.strip("\n")) if p.strip())
