"""Imagination: synthesize new training prompts from seed problems each round.

The paper (``PAPER.md``, "Imagination") synthesizes prompts ``x1 = g(x0,
pi0)`` with a MetaMath-like scheme: rule-based rewrites of seed problems,
backward questions, and the policy itself. Here ``g`` has three sources:

* ``perturb`` -- rule-based number perturbation of a seed.
  Arithmetic: resample some of the start number and operands (each in
  ``1..max_operand``), keep the operations, keep only chains valid under the
  task's knobs (every intermediate in ``0..max_value``, exact division); the
  answer is recomputed. Countdown: resample some of the numbers (in
  ``1..max_number``); if the seed's target is still reachable (``countdown.
  solve``), keep it, else pick a new target reached by a random valid
  combination of all the numbers.
* ``backward`` -- questions built from an answer.
  Countdown: a value the seed's solution (or another random solution of the
  same numbers) reaches at an intermediate step becomes the new target; the
  steps it depends on are the demonstration, so it is solvable by
  construction. Arithmetic: a MetaMath backward question ("((x+5)*3)-4 = 32,
  what is x?") would need a new question format: the arithmetic question
  grammar (``arithmetic.parse_question``) has no unknown, and
  ``demonstration`` always computes forwards, so such a problem could not be
  prompted or demonstrated by the task as it is. Instead ``backward`` keeps
  the seed's *answer* and builds a new forward chain ending at it, working
  backwards from the answer: each step picks an operation and operand whose
  inverse lands inside the knobs' ranges, and the first operand is a valid
  start number. The result is an ordinary arithmetic problem with the seed's
  answer; it is backward in construction, not in what it asks.
* ``policy`` -- questions sampled from the policy: ``sample_questions``
  (wired by the caller to the LM sampler) continues prompt prefixes made of
  the task's prompt head and a random prefix of a seed question (``"Q: ((7+"``);
  each continuation is cut at the step delimiter, must parse as a canonical
  question of the task within its knobs, and gets its answer from the task's
  solver (arithmetic: evaluation; countdown: ``countdown.solve``). Everything
  the policy writes is untrusted: malformed text is rejected, never raised on.

``imagine`` mixes the sources by weight and deduplicates the result against
the evaluation questions (``exclude``), the seeds, and itself. Duplicates are
detected on a canonical key, stricter than string equality: a Countdown
question is keyed by the multiset of its numbers and its target (``"7 3 12 5
to 27"`` is the same problem as ``"3 7 12 5 to 27"``), an arithmetic one by
its chain with the operands of a commutative first operation sorted (``"5+7"``
is ``"7+5"``). Every produced problem is checked to verify with its own
demonstration. Outputs are a deterministic function of the arguments.

Each produced problem records its provenance in ``data["origin"]``:
``{"source": ..., "parent": <seed uid>}``.

Task-specific code lives in a small registry (``TaskImagination``) keyed by
``Task.name``; ``register_task_imagination`` adds a task.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from alphallm.tasks.base import Problem, Task

SOURCES = ("perturb", "backward", "policy")
DEFAULT_MIX = {"perturb": 0.6, "backward": 0.4}
# Longest question text taken from the policy; longer ones are rejected unread.
MAX_QUESTION_CHARS = 256
# Operand candidates considered per backward arithmetic step.

# Rejection reasons (``Problem | str`` results carry one of these).
BAD_SEED = "bad_seed"          # the seed is not a problem of this task
INVALID = "invalid"            # outside the task's knobs, or no valid rewrite found
UNSOLVABLE = "unsolvable"      # Countdown instance with no solution
TRIVIAL = "trivial"            # Countdown target given, or reached before the end
UNPARSEABLE = "unparseable"    # policy text that is not a canonical question
EXCLUDED = "excluded"          # an evaluation question (contamination blocked)
DUPLICATE = "duplicate"        # a seed, or already produced
SELF_CHECK = "self_check"      # fails to verify with its own demonstration

Candidate = Problem | str
SampleQuestions = Callable[[list[str]], Sequence[str]]


@dataclasses.dataclass(frozen=True)
class TaskImagination:
  """What imagination needs of a task.

  Attributes:
    perturb: ``(task, seed, rng) -> Problem | reason``.
    backward: ``(task, seed, rng) -> Problem | reason``.
    from_question: ``(task, question) -> Problem | reason``: the problem of
      an untrusted question text, its answer established by the solver.
    key: ``question -> hashable | None``: canonical key for deduplication
      (None if the text is not a question of the task).
  """

  perturb: Callable[[Task, Problem, np.random.Generator], Candidate]
  backward: Callable[[Task, Problem, np.random.Generator], Candidate]
  from_question: Callable[[Task, str], Candidate]
  key: Callable[[str], Hashable | None]


_REGISTRY: dict[str, TaskImagination] = {}


def register_task_imagination(name: str, ops: TaskImagination) -> None:
  """Makes imagination available for the task called ``name``."""
  _REGISTRY[name] = ops


def has_task_imagination(name: str) -> bool:
  """Whether the task called ``name`` has rule-based imagination (perturb, backward, policy)."""
  return name in _REGISTRY


def task_imagination(task: Task) -> TaskImagination:
  """The registered imagination of ``task``; ValueError if there is none."""
  ops = _REGISTRY.get(task.name)
  if ops is None:
    raise ValueError(f"no imagination registered for task {task.name!r}; "
                     f"known: {sorted(_REGISTRY)} (see register_task_imagination)")
  return ops


def origin(source: str, parent: Problem | None) -> dict[str, Any]:
  return {"source": source, "parent": parent.uid if parent is not None else None}


def mask(rng: np.random.Generator, n: int) -> np.ndarray:
  """A random non-empty subset of ``range(n)`` as a boolean mask."""
  mask = rng.random(n) < 0.5
  if not mask.any():
    mask[int(rng.integers(n))] = True
  return mask


# ----------------------------------------------------------------------------
# Task-independent entry points.

def perturb(task: Task, seed: Problem, rng: np.random.Generator) -> Candidate:
  """One rule-based number perturbation of ``seed`` (a Problem, or a rejection reason)."""
  return task_imagination(task).perturb(task, seed, rng)


def backward(task: Task, seed: Problem, rng: np.random.Generator) -> Candidate:
  """One backward problem built from ``seed`` (a Problem, or a rejection reason)."""
  return task_imagination(task).backward(task, seed, rng)


def problem_from_question(task: Task, question: object) -> Candidate:
  """The problem of an untrusted question text, answer from the solver, or a reason."""
  if not isinstance(question, str) or len(question) > MAX_QUESTION_CHARS:
    return UNPARSEABLE
  return task_imagination(task).from_question(task, question)


def question_key(task: Task, question: str) -> Hashable:
  """The canonical dedup key of ``question`` (the text itself if it does not parse)."""
  key = task_imagination(task).key(question)
  return key if key is not None else ("text", question)


def prompt_head(task: Task) -> str:
  """What ``task.prompt`` writes before the question (e.g. ``"Q: "``)."""
  marker = "\x00question\x00"
  text = task.prompt(Problem(question=marker, answer=""))
  if marker not in text:
    raise ValueError(f"task {task.name!r}: prompt() does not contain the question verbatim")
  return text.split(marker, 1)[0]


def question_prefixes(task: Task, seeds: Sequence[Problem], num: int,
                      rng: np.random.Generator) -> tuple[list[str], list[Problem]]:
  """``num`` policy prompts: the prompt head plus a random prefix of a random seed question.

  Returns the prefixes and the seed each one came from.
  """
  head = prompt_head(task)
  parents = [seeds[int(i)] for i in rng.integers(len(seeds), size=num)]
  # Keep 0..len-1 characters: the policy always writes part of the question.
  prefixes = [head + p.question[:int(rng.integers(max(len(p.question), 1)))] for p in parents]
  return prefixes, parents


def policy_candidates(task: Task, seeds: Sequence[Problem], num: int,
                      rng: np.random.Generator, sample_questions: SampleQuestions
                      ) -> list[Candidate]:
  """Questions the policy writes from ``num`` prefixes, each a Problem or a reason.

  ``sample_questions(prefixes)`` must return one continuation per prefix
  (the generated text only, not the prefix). The question is the prefix's
  part after the prompt head plus the continuation, up to the first step
  delimiter; it must parse as a canonical question within the task's knobs,
  and its answer is established by the task's solver. Malformed text (any
  string, or a non-string) is rejected as ``"unparseable"`` / ``"invalid"``.

  Raises:
    ValueError: ``sample_questions`` did not return a sequence of ``num`` items.
  """
  prefixes, parents = question_prefixes(task, seeds, num, rng)
  outputs = sample_questions(list(prefixes))
  if isinstance(outputs, (str, bytes)) or not isinstance(outputs, Sequence) \
      or len(outputs) != len(prefixes):
    got = len(outputs) if isinstance(outputs, Sequence) else type(outputs).__name__
    raise ValueError(f"sample_questions must return one string per prefix: "
                     f"{len(prefixes)} prefixes, got {got}")
  head_len = len(prompt_head(task))
  out: list[Candidate] = []
  for prefix, text, parent in zip(prefixes, outputs, parents):
    if not isinstance(text, str) or len(text) > 4 * MAX_QUESTION_CHARS:
      out.append(UNPARSEABLE)
      continue
    question = (prefix[head_len:] + text).split(task.step_delimiter, 1)[0]
    cand = problem_from_question(task, question)
    if isinstance(cand, Problem):
      cand = dataclasses.replace(
          cand, data={**cand.data, "origin": origin("policy", parent)})
    out.append(cand)
  return out


# ----------------------------------------------------------------------------
# imagine.

@dataclasses.dataclass
class ImaginationStats:
  """What ``imagine`` did.

  Attributes:
    requested: problems asked for.
    quotas: the first-pass share of each source (from the mix weights).
    produced: problems kept, per source.
    attempts: candidates drawn, per source.
    rejected: per source, rejection reason -> count.
  """

  requested: int
  quotas: dict[str, int]
  produced: dict[str, int] = dataclasses.field(default_factory=dict)
  attempts: dict[str, int] = dataclasses.field(default_factory=dict)
  rejected: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

  @property
  def total(self) -> int:
    return sum(self.produced.values())

  @property
  def shortfall(self) -> int:
    return self.requested - self.total

  def to_json(self) -> dict[str, Any]:
    return {"requested": self.requested, "quotas": dict(self.quotas),
            "produced": dict(self.produced), "attempts": dict(self.attempts),
            "rejected": {s: dict(r) for s, r in self.rejected.items()},
            "shortfall": self.shortfall}


def split_quota(num: int, mix: Mapping[str, float]) -> dict[str, int]:
  """``num`` split by weight (largest remainder; ties in ``SOURCES`` order)."""
  total = sum(mix.values())
  raw = {s: num * mix.get(s, 0.0) / total for s in SOURCES}
  quotas = {s: int(math.floor(raw[s])) for s in SOURCES}
  rest = num - sum(quotas.values())
  for s in sorted(SOURCES, key=lambda s: (-(raw[s] - quotas[s]), SOURCES.index(s)))[:rest]:
    quotas[s] += 1
  return quotas


def _check_mix(mix: Mapping[str, float] | None, sample_questions: SampleQuestions | None
               ) -> dict[str, float]:
  mix = dict(DEFAULT_MIX if mix is None else mix)
  unknown = sorted(set(mix) - set(SOURCES))
  if unknown:
    raise ValueError(f"unknown imagination sources {unknown}; expected some of {SOURCES}")
  for s, w in mix.items():
    if (isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)
        or w < 0):
      raise ValueError(f"mix weight of {s!r} must be a finite number >= 0, got {w!r}")
  if sum(mix.values()) <= 0:
    raise ValueError(f"mix weights must not all be 0: {mix}")
  if mix.get("policy", 0) > 0 and sample_questions is None:
    raise ValueError("mix gives weight to 'policy' but no sample_questions was passed")
  return {s: float(mix.get(s, 0.0)) for s in SOURCES}


def _candidates(task: Task, source: str, seeds: Sequence[Problem], rng: np.random.Generator,
                sample_questions: SampleQuestions | None, batch_size: int
                ) -> Iterator[Candidate]:
  """An endless stream of candidates from ``source`` (seeds visited in shuffled rounds)."""
  if source == "policy":
    while True:
      yield from policy_candidates(task, seeds, batch_size, rng, sample_questions)
  transform = perturb if source == "perturb" else backward
  while True:
    for i in rng.permutation(len(seeds)):
      yield transform(task, seeds[int(i)], rng)


def imagine_with_stats(task: Task, seeds: Sequence[Problem], num: int, seed: int,
                       exclude: set[str] | frozenset[str] = frozenset(),
                       mix: Mapping[str, float] | None = None,
                       sample_questions: SampleQuestions | None = None, *,
                       max_attempts_per_problem: int = 30, policy_batch_size: int = 32
                       ) -> tuple[list[Problem], ImaginationStats]:
  """``imagine``, also returning what happened (see ``ImaginationStats``)."""
  if not isinstance(num, int) or num < 0:
    raise ValueError(f"num must be an int >= 0, got {num!r}")
  if not isinstance(seed, int) or seed < 0:
    raise ValueError(f"seed must be an int >= 0, got {seed!r}")
  if max_attempts_per_problem < 1 or policy_batch_size < 1:
    raise ValueError("max_attempts_per_problem and policy_batch_size must be >= 1")
  weights = _check_mix(mix, sample_questions)
  quotas = split_quota(num, weights)
  stats = ImaginationStats(requested=num, quotas=quotas)
  if num == 0:
    return [], stats
  task_imagination(task)
  seeds = list(seeds)
  if not seeds:
    raise ValueError("imagine needs at least one seed problem")

  exclude = frozenset(exclude)
  excluded_keys = {question_key(task, q) for q in exclude}
  seen = {question_key(task, p.question) for p in seeds}
  out: list[Problem] = []
  streams = {s: _candidates(task, s, seeds, np.random.default_rng([seed, i]), sample_questions,
                            policy_batch_size)
             for i, s in enumerate(SOURCES) if weights[s] > 0}
  for s in streams:
    stats.produced[s], stats.attempts[s] = 0, 0
    stats.rejected[s] = collections.Counter()

  def accept(source: str, cand: Candidate) -> None:
    reason = cand if isinstance(cand, str) else None
    if reason is None:
      key = question_key(task, cand.question)
      if cand.question in exclude or key in excluded_keys:
        reason = EXCLUDED
      elif key in seen:
        reason = DUPLICATE
      elif not task.verify(cand, task.demonstration(cand)):
        reason = SELF_CHECK
      else:
        seen.add(key)
        out.append(cand)
        stats.produced[source] += 1
        return
    stats.rejected[source][reason] += 1

  def fill(source: str, target: int, budget: int) -> None:
    stop = stats.attempts[source] + budget
    while stats.produced[source] < target and len(out) < num and stats.attempts[source] < stop:
      stats.attempts[source] += 1
      accept(source, next(streams[source]))

  # First pass: each source fills its quota; second: the others make up any shortfall.
  for s in streams:
    fill(s, quotas[s], max_attempts_per_problem * quotas[s])
  for s in streams:
    missing = num - len(out)
    if missing:
      fill(s, stats.produced[s] + missing, max_attempts_per_problem * missing)
  stats.rejected = {s: dict(sorted(r.items())) for s, r in stats.rejected.items()}
  order = np.random.default_rng([seed, len(SOURCES)]).permutation(len(out))
  return [out[int(i)] for i in order], stats


def imagine(task: Task, seeds: Sequence[Problem], num: int, seed: int,
            exclude: set[str] | frozenset[str] = frozenset(),
            mix: Mapping[str, float] | None = None,
            sample_questions: SampleQuestions | None = None, **kwargs) -> list[Problem]:
  """Up to ``num`` new problems synthesized from ``seeds`` (see the module doc).

  Args:
    task: the task (its name selects the registered ``TaskImagination``).
    seeds: seed problems (e.g. the training split, or last round's prompts).
    num: how many problems to produce. Fewer come back only when the
      sources cannot find enough new valid ones within their attempt budget
      (``imagine_with_stats`` reports the shortfall).
    seed: the random seed; the output is a deterministic function of the
      arguments (and of what ``sample_questions`` returns).
    exclude: questions that must never be produced, the evaluation split;
      compared on canonical keys (see the module doc).
    mix: weight per source among ``SOURCES``; default ``DEFAULT_MIX``.
      Each source's share is filled first, then the others make up a
      shortfall, in ``SOURCES`` order.
    sample_questions: the policy sampler, required when ``mix["policy"] > 0``
      (see ``policy_candidates``).
    **kwargs: ``max_attempts_per_problem`` (candidates drawn per problem
      asked of a source, default 30) and ``policy_batch_size`` (prefixes per
      ``sample_questions`` call, default 32).

  Returns:
    Distinct problems, none in ``exclude`` nor among the seeds, each verified
    by its own demonstration, in a seeded random order.
  """
  return imagine_with_stats(task, seeds, num, seed, exclude, mix, sample_questions,
                            **kwargs)[0]
