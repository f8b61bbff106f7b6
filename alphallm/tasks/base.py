"""The Task interface: what a verifiable reasoning task must provide.

A task is one small file implementing :class:`Task`. Everything the paper's
loop needs from a task is here:

* a seeded problem generator with difficulty knobs (``generate``);
* the prompt format (``prompt``);
* the step delimiter that ends one reasoning step, i.e. the option
  termination function beta of eta-MCTS (``step_delimiter``);
* answer extraction (``extract_answer``);
* an exact verifier, the ground-truth outcome reward (``verify``);
* demonstration solutions for the warm start (``demonstration``).

Text conventions shared by the shipped tasks: a completion is a sequence of
steps, each ending with ``step_delimiter``, followed by a final answer line
``f"{answer_prefix}{answer}"``; the model ends it with EOS.

Everything a model writes is untrusted: ``extract_answer`` and ``verify`` must
use bounded parsers (see ``alphallm.tasks.parsing``), never eval/exec, and
return ``None`` / ``False`` on malformed text rather than raise.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


@dataclasses.dataclass(frozen=True)
class Problem:
  """One problem instance.

  Attributes:
    question: the task-specific question text (what ``Task.prompt`` formats).
    answer: the canonical final answer string (the answer key). Test-time
      search never receives it: only ``Task.prompt(problem)`` is encoded.
    data: task-specific structured data, JSON-serialisable (e.g. the numbers
      and target of a Countdown instance, or a reference solution).
  """

  question: str
  answer: str
  data: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def uid(self) -> str:
    """A stable id of the question (used for dedup and data storage)."""
    return hashlib.sha1(self.question.encode("utf-8")).hexdigest()[:16]

  def to_json(self) -> dict[str, Any]:
    return {"question": self.question, "answer": self.answer, "data": dict(self.data)}

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> "Problem":
    missing = [k for k in ("question", "answer") if k not in obj]
    if missing:
      raise ValueError(f"problem record is missing keys {missing}: {json.dumps(obj)[:200]}")
    return cls(question=str(obj["question"]), answer=str(obj["answer"]),
               data=dict(obj.get("data", {})))


class Task(abc.ABC):
  """A verifiable task. Subclasses set ``name`` and implement the methods."""

  name: ClassVar[str]
  # What ends one reasoning step: the option termination function of the search.
  step_delimiter: ClassVar[str] = "\n"
  # The final answer line starts with this.
  answer_prefix: ClassVar[str] = "A: "
  # The same-step hook of eta-MCTS's state merge: characters that do not change a
  # step. Two steps whose texts are equal once these are dropped are the same step
  # (``alphallm.search.expansion.same_step``); steps with any other difference,
  # e.g. ``7*8=56`` and ``7*8=54``, are never merged.
  same_step_ignored: ClassVar[str] = " \t"
  # The step-checker hook's answer format: the characters an answer may use
  # (``alphallm.tools.make_answer_format_critic``); None: answers are not checked.
  answer_charset: ClassVar[str | None] = None
  # True when the answer line restates the result of the last step (``... =c`` then
  # ``A: c``): the step checker then judges an answer line that does not.
  answer_restates_last_result: ClassVar[bool] = False
  # True when every solution line that starts with a digit is an unsigned
  # equation step ``a<op>b=c``: the calculator then judges such a line that is
  # not well formed as a wrong step (``parsing.check_step_line``).
  equation_steps: ClassVar[bool] = False

  @abc.abstractmethod
  def generate(self, seed: int, num: int) -> list[Problem]:
    """``num`` problems, a deterministic function of ``seed`` and the knobs."""

  def prompt(self, problem: Problem) -> str:
    """The text the policy is conditioned on. Ends with a step delimiter."""
    return f"Q: {problem.question}{self.step_delimiter}"

  @abc.abstractmethod
  def demonstration(self, problem: Problem) -> str:
    """A correct solution: steps, each ending with the delimiter, then the answer line."""

  def extract_answer(self, completion: str) -> str | None:
    """The final answer written in ``completion``, or None if there is none."""
    for line in completion.split(self.step_delimiter):
      if line.startswith(self.answer_prefix):
        ans = line[len(self.answer_prefix):].strip()
        return ans[:64] if ans else None
    return None

  @abc.abstractmethod
  def verify(self, problem: Problem, completion: str) -> bool:
    """Exact outcome reward: is ``completion`` a correct solution of ``problem``?"""

  def split_steps(self, completion: str) -> list[str]:
    """The completion's steps, each without its delimiter (answer line included)."""
    parts = completion.split(self.step_delimiter)
    if parts and parts[-1] == "":
      parts = parts[:-1]
    return parts


def make_splits(task: Task, seed: int, num_train: int, num_eval: int,
                eval_task: Task | None = None) -> tuple[list[Problem], list[Problem]]:
  """Disjoint train and held-out eval problems (no question in both).

  The eval split is generated first from its own seed stream, and train
  problems whose question appears in it are dropped and replaced.

  Args:
    task: the task train problems are drawn from.
    seed: the experiment seed.
    num_train: train problems wanted.
    num_eval: eval problems wanted.
    eval_task: the task eval problems are drawn from, e.g. GSM8K's test split
      when ``task`` reads its train split; default ``task`` itself (both
      splits from one generator, as the synthetic tasks do).
  """
  if num_eval < 0 or num_train < 0:
    raise ValueError(f"split sizes must be >= 0, got num_train={num_train}, num_eval={num_eval}")
  source = task if eval_task is None else eval_task
  eval_problems = _unique(source.generate(seed * 2 + 1, num_eval))
  for attempt in range(1, 21):  # Top up what deduplication removed.
    if len(eval_problems) >= num_eval:
      break
    extra = source.generate(seed * 2 + 1 + 1000 * attempt + 500, num_eval)
    eval_problems = _unique(eval_problems + extra)[:num_eval]
  if len(eval_problems) < num_eval:
    raise ValueError(
        f"task {source.name!r} produced only {len(eval_problems)} distinct eval problems "
        f"of {num_eval} asked for: raise its difficulty knobs or lower the split size")
  held_out = {p.question for p in eval_problems}
  train: list[Problem] = []
  seen = set(held_out)
  attempt = 0
  while len(train) < num_train:
    if attempt > 20:
      raise ValueError(
          f"task {task.name!r} cannot produce {num_train} train problems distinct from the "
          f"eval split (got {len(train)}): raise its difficulty knobs or lower the split size")
    for p in task.generate(seed * 2 + 2 + 1000 * attempt, num_train):
      if p.question not in seen:
        seen.add(p.question)
        train.append(p)
        if len(train) == num_train:
          break
    attempt += 1
  return train, eval_problems


def _unique(problems: Sequence[Problem]) -> list[Problem]:
  seen, out = set(), []
  for p in problems:
    if p.question not in seen:
      seen.add(p.question)
      out.append(p)
  return out
