"""GSM8K: grade-school math word problems from the real dataset.

A problem is one example of a dataset split (``alphallm.datasets.gsm8k``)::

  question:       Janet's ducks lay 16 eggs per day. ... How much ... every day?
  answer:         18                      (canonical number, see graders.format_number)
  data:           {"solution": <reference solution>, "line": 1, "split": "test"}
  demonstration:  Janet sells 16 - 3 - 4 = 9 duck eggs a day.\\n
                  She makes 9 * 2 = $18 every day at the farmer's market.\\n
                  A: 18

One option (reasoning step) is one line, as in the paper. The verifier is
``graders.grade_gsm8k``: the stated answer (``A:``, ``The answer is``,
``####``, or else the last number) must equal the reference exactly, as a
rational.
"""

from __future__ import annotations

import numpy as np

from alphallm import graders
from alphallm.datasets import gsm8k as gsm8k_data
from alphallm.tasks.registry import register
from alphallm.tasks.base import Problem, Task

PROMPT_FORMATS = ("plain", "chat")
ANSWER_LINES = ("prefix", "sentence")
# Longest canonical answer ``extract_answer`` returns (as the base task).
MAX_ANSWER_CHARS = 64


@register
class GSM8KTask(Task):
  """GSM8K problems sampled from a dataset split.

  Knobs:
    data_dir: the GSM8K source directory (``train.jsonl``, ``test.jsonl``);
      default ``$ALPHALLM_GSM8K_DIR``, else ``<repo>/../shared/data/gsm8k``.
    split: the split problems are drawn from, ``"train"`` or ``"test"``.
    num_shots: worked examples from the train split put before the question
      (the few-shot prompt); 0 for a bare question. With ``split="train"``
      they are never drawn as problems.
    shots_seed: which train examples are the shots.
    prompt_format: ``"plain"`` (``Q: ...``) or ``"chat"`` (``User: ...`` /
      ``Assistant:`` turns).
    calculator_annotations: keep GSM8K's ``<<48/2=24>>`` annotations in
      demonstrations (default: removed).
    answer_line: the demonstration's last line, ``"prefix"`` (``A: 18``) or
      ``"sentence"`` (``The answer is 18.``; it then is the answer prefix).
    tfds_dir: read the split through TFDS (prepared there once, read with
      ``as_data_source``); None reads the jsonl file directly.
    skip_malformed: skip malformed dataset lines instead of raising.
  """

  name = "gsm8k"
  step_delimiter = "\n"

  def __init__(self, data_dir: str | None = None, split: str = "test", num_shots: int = 0,
               shots_seed: int = 0, prompt_format: str = "plain",
               calculator_annotations: bool = False, answer_line: str = "prefix",
               tfds_dir: str | None = None, skip_malformed: bool = False):
    _check_choice("prompt_format", prompt_format, PROMPT_FORMATS)
    _check_choice("answer_line", answer_line, ANSWER_LINES)
    if not isinstance(num_shots, int) or isinstance(num_shots, bool) or not 0 <= num_shots <= 64:
      raise ValueError(f"knob num_shots must be an int in [0, 64], got {num_shots!r}")
    self.split = split
    self.num_shots = num_shots
    self.prompt_format = prompt_format
    self.calculator_annotations = bool(calculator_annotations)
    self.answer_line = answer_line
    if answer_line == "sentence":
      self.answer_prefix = "The answer is "
    load = lambda s: gsm8k_data.load(s, data_dir, tfds_dir, skip_malformed)  # noqa: E731
    self._examples = load(split)
    shots: list[gsm8k_data.GSM8KExample] = []
    shot_rows: set[int] = set()
    if num_shots:
      train = self._examples if split == "train" else load("train")
      rows = np.random.default_rng(shots_seed).permutation(len(train))[:num_shots]
      shots = [train[int(i)] for i in rows]
      shot_rows = {int(i) for i in rows} if split == "train" else set()
    self._shots_text = "".join(self._turn(ex.question, self._demo(ex)) + "\n" for ex in shots)
    self._pool = np.array([i for i in range(len(self._examples)) if i not in shot_rows], np.int64)
    if not len(self._pool):
      raise ValueError(f"gsm8k split {split!r} has no problems left after {num_shots} shots")

  def __len__(self) -> int:
    """The number of distinct problems ``generate`` draws from."""
    return len(self._pool)

  def generate(self, seed: int, num: int) -> list[Problem]:
    """``num`` distinct problems of the split, drawn without replacement by ``seed``."""
    if not 0 <= num <= len(self._pool):
      raise ValueError(f"gsm8k split {self.split!r} has {len(self._pool)} problems; "
                       f"cannot draw {num}")
    rows = np.random.default_rng(seed).choice(self._pool, size=num, replace=False)
    return [self._problem(self._examples[int(i)]) for i in rows]

  def prompt(self, problem: Problem) -> str:
    return self._shots_text + self._turn(problem.question, "")

  def demonstration(self, problem: Problem) -> str:
    solution = problem.data.get("solution")
    if not isinstance(solution, str):
      raise ValueError(f"gsm8k problem {problem.uid} has no reference solution in its data")
    return self._demo(gsm8k_data.GSM8KExample(problem.question, solution, 0))

  def extract_answer(self, completion: str) -> str | None:
    value = graders.extract_gsm8k_answer(completion)
    text = None if value is None else graders.format_number(value)
    return text if text is not None and len(text) <= MAX_ANSWER_CHARS else None

  def verify(self, problem: Problem, completion: str) -> bool:
    return graders.grade_gsm8k(completion, problem.answer)

  def _problem(self, ex: gsm8k_data.GSM8KExample) -> Problem:
    answer = graders.gsm8k_reference_answer(ex.solution)
    return Problem(question=ex.question, answer=graders.format_number(answer),
                   data={"solution": ex.solution, "line": ex.line, "split": self.split})

  def _demo(self, ex: gsm8k_data.GSM8KExample) -> str:
    """Reasoning lines (annotations kept or removed), then the answer line."""
    steps = ex.steps
    if not self.calculator_annotations:
      steps = [gsm8k_data.strip_annotations(s) for s in steps]
    answer = graders.format_number(graders.gsm8k_reference_answer(ex.solution))
    suffix = "." if self.answer_line == "sentence" else ""
    return "".join(s + self.step_delimiter for s in steps) + self.answer_prefix + answer + suffix

  def _turn(self, question: str, solution: str) -> str:
    """One question (and its solution, if any) in the prompt format."""
    if self.prompt_format == "chat":
      return f"User: {question}\nAssistant:\n{solution}"
    return f"Q: {question}\n{solution}"


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"knob {name} must be one of {choices}, got {value!r}")
