"""Tests for alphallm.imagination: validity, contamination, determinism, safety."""

import operator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphallm import imagination as im
from alphallm import imagination_rules as rules
from alphallm.tasks import countdown, get_task, make_splits
from alphallm.tasks.arithmetic import ArithmeticTask
from alphallm.tasks.base import Problem

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def _splits(name, **knobs):
  task = get_task(name, **knobs)
  train, evals = make_splits(task, seed=0, num_train=60, num_eval=60)
  return task, train, evals


def _completing_sampler(task, pool_seed=123):
  """A stand-in policy: completes a prefix into some generated question, then rambles."""
  pool = [p.question for p in task.generate(pool_seed, 3000)]
  head = im.prompt_head(task)

  def sample(prefixes):
    out = []
    for i, prefix in enumerate(prefixes):
      start = prefix[len(head):]
      match = next((q for q in pool[i % 7::7] if q.startswith(start)), None)
      out.append(match[len(start):] + "\nA: 5" if match is not None else "no idea")
    return out

  return sample


def _arith_eval(question):
  start, chain = rules.arithmetic.parse_question(question)
  value = start
  for op, b in chain:
    value = _OPS[op](value, b) if op in _OPS else value // b
  return value


@pytest.mark.parametrize("name", ["arithmetic", "countdown"])
def test_all_sources_produce_valid_self_verifying_problems(name):
  task, train, evals = _splits(name)
  exclude = {p.question for p in evals}
  problems, stats = im.imagine_with_stats(
      task, train, 120, seed=3, exclude=exclude,
      mix={"perturb": 1, "backward": 1, "policy": 1},
      sample_questions=_completing_sampler(task))
  assert len(problems) == 120 and stats.shortfall == 0
  assert all(stats.produced[s] > 0 for s in im.SOURCES), stats.to_json()
  for p in problems:
    assert task.verify(p, task.demonstration(p)), p
    assert p.question not in exclude
    assert p.data["origin"]["source"] in im.SOURCES
  assert len({p.question for p in problems}) == len(problems)
  assert not {p.question for p in problems} & {p.question for p in train}
  for s in stats.produced:
    assert stats.attempts[s] == stats.produced[s] + sum(stats.rejected[s].values())


def test_arithmetic_answers_are_correct_and_within_knobs():
  task, train, _ = _splits("arithmetic", ops="+-*/", max_operand=12, max_value=150)
  problems = im.imagine(task, train, 100, seed=1)
  by_uid = {p.uid: p for p in train}
  for p in problems:
    assert int(p.answer) == _arith_eval(p.question)
    start, chain = rules.arithmetic.parse_question(p.question)
    assert rules.arithmetic_value(task, start, chain) == int(p.answer)
    if p.data["origin"]["source"] == "backward":
      assert p.answer == by_uid[p.data["origin"]["parent"]].answer


def test_countdown_answers_are_established_by_the_solver():
  task, train, _ = _splits("countdown")
  problems = im.imagine(task, train, 100, seed=1)
  by_uid = {p.uid: p for p in train}
  for p in problems:
    numbers, target = countdown.parse_question(p.question)
    assert p.answer == str(target) and target not in numbers
    assert len(numbers) == task.num_numbers and max(numbers) <= task.max_number
    steps = [tuple(s) for s in p.data["solution"]]
    assert countdown.check_solution(numbers, target, steps, task.ops)
    assert countdown.solve(numbers, target, task.max_value, task.ops) is not None
    if p.data["origin"]["source"] == "backward":
      parent = by_uid[p.data["origin"]["parent"]]
      assert numbers == parent.data["numbers"]


def test_problem_from_question_uses_the_solver():
  task = get_task("countdown")
  p = im.problem_from_question(task, "3 7 12 5 to 27")
  assert isinstance(p, Problem) and p.answer == "27"
  assert task.verify(p, task.demonstration(p))
  assert im.problem_from_question(task, "1 1 1 1 to 199") == im.UNSOLVABLE
  assert im.problem_from_question(task, "1 1 1 2 to 2") == im.TRIVIAL
  assert im.problem_from_question(task, "03 7 12 5 to 27") == im.UNPARSEABLE
  assert im.problem_from_question(task, "0 7 12 5 to 27") == im.INVALID
  assert im.problem_from_question(task, "3 7 12 to 27") == im.INVALID  # num_numbers is 4
  arith = get_task("arithmetic")
  q = im.problem_from_question(arith, "((7+5)*3)-4")
  assert isinstance(q, Problem) and q.answer == "32"
  assert im.problem_from_question(arith, "((70+5)*3)-4") == im.INVALID  # operand > 9
  assert im.problem_from_question(arith, "7+5*3") == im.UNPARSEABLE


def test_deterministic():
  for name in ("arithmetic", "countdown"):
    task, train, evals = _splits(name)
    kwargs = dict(exclude={p.question for p in evals}, mix={"perturb": 2, "backward": 1,
                                                            "policy": 1})
    a = im.imagine(task, train, 50, seed=7, sample_questions=_completing_sampler(task), **kwargs)
    b = im.imagine(task, train, 50, seed=7, sample_questions=_completing_sampler(task), **kwargs)
    c = im.imagine(task, train, 50, seed=8, sample_questions=_completing_sampler(task), **kwargs)
    assert [p.to_json() for p in a] == [p.to_json() for p in b]
    assert [p.question for p in a] != [p.question for p in c]


def test_no_contamination_from_near_duplicate_seeds():
  task, _, evals = _splits("countdown")
  exclude = {p.question for p in evals}
  # Seeds are the eval problems with their numbers reordered: same instances.
  seeds = [Problem(question=countdown.format_question(p.data["numbers"][::-1], p.data["target"]),
                   answer=p.answer, data={**p.data, "numbers": p.data["numbers"][::-1]})
           for p in evals]
  problems, stats = im.imagine_with_stats(task, seeds, 150, seed=0, exclude=exclude)
  eval_keys = {(tuple(sorted(p.data["numbers"])), p.data["target"]) for p in evals}
  for p in problems:
    assert p.question not in exclude
    numbers, target = countdown.parse_question(p.question)
    assert (tuple(sorted(numbers)), target) not in eval_keys


def test_perturbation_onto_an_eval_question_is_dropped():
  # A tiny space: "a+b" with a, b in 1..3. The seed 1+1 perturbs into every one of them.
  task = ArithmeticTask(min_ops=1, max_ops=1, max_operand=3, ops="+", max_value=99)
  seed = Problem(question="1+1", answer="2", data={"start": 1, "ops": [["+", 1]]})
  rng = np.random.default_rng(0)
  reachable = {p.question for p in (im.perturb(task, seed, rng) for _ in range(200))
               if isinstance(p, Problem)}
  assert {"2+1", "1+2", "3+3"} <= reachable  # The perturbation does produce them...
  exclude = {"1+2", "3+3"}
  problems, stats = im.imagine_with_stats(task, [seed], 20, seed=0, exclude=exclude,
                                          mix={"perturb": 1})
  questions = {p.question for p in problems}
  # ... but they, and "2+1" (the same problem as "1+2"), are dropped.
  assert not questions & {"1+2", "2+1", "3+3", "1+1"}
  assert questions and all(p.question in reachable for p in problems)
  assert stats.rejected["perturb"]["excluded"] > 0
  assert stats.shortfall > 0  # Only 3 new problems exist: fewer come back, no error.


def test_arithmetic_backward_keeps_the_answer():
  task = get_task("arithmetic")
  rng = np.random.default_rng(0)
  for seed in task.generate(5, 30):
    for _ in range(5):
      p = im.backward(task, seed, rng)
      if isinstance(p, Problem):
        assert p.answer == seed.answer and task.verify(p, task.demonstration(p))
        assert len(p.data["ops"]) == len(seed.data["ops"])


def test_countdown_backward_targets_an_intermediate_value():
  task = get_task("countdown")
  seed = Problem(question="3 7 12 5 to 27", answer="27",
                 data={"numbers": [3, 7, 12, 5], "target": 27,
                       "solution": [[12, "+", 3, 15], [15, "+", 7, 22], [22, "+", 5, 27]]})
  rng = np.random.default_rng(0)
  made = [im.backward(task, seed, rng) for _ in range(30)]
  made = [p for p in made if isinstance(p, Problem)]
  assert {"3 7 12 5 to 15", "3 7 12 5 to 22"} <= {p.question for p in made}
  for p in made:
    assert task.verify(p, task.demonstration(p))
  # From the seed's own solution, with only the steps the new target depends on.
  solutions = {(p.question, str(p.data["solution"])) for p in made}
  assert ("3 7 12 5 to 15", str([[12, "+", 3, 15]])) in solutions
  assert ("3 7 12 5 to 22", str([[12, "+", 3, 15], [15, "+", 7, 22]])) in solutions


def test_dependencies_prune_unused_steps():
  steps = [(3, "+", 7, 10), (12, "*", 5, 60), (10, "+", 2, 12)]
  assert rules._dependencies([3, 7, 12, 5, 2], steps, 2) == [(3, "+", 7, 10), (10, "+", 2, 12)]


_GARBAGE = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[0-9 ()+\-*/to\n]{0,40}", fullmatch=True),
    st.from_regex(r"[0-9]{1,3}( [0-9]{1,3}){0,6} to [0-9]{1,4}(\n.*)?", fullmatch=True),
    st.from_regex(r"[0-9()+\-*/]{1,30}(\n.*)?", fullmatch=True),
    st.sampled_from(["\n", "", "1\n", " to 27\n", "0 0 0 0 to 0", "999999999999 1 1 1 to 2"]),
)


@pytest.mark.parametrize("name", ["arithmetic", "countdown"])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_policy_garbage_is_rejected_safely(name, data):
  task = get_task(name)
  seeds = task.generate(0, 5)
  exclude = {p.question for p in task.generate(1, 20)}

  def sample(prefixes):
    return [data.draw(_GARBAGE) for _ in prefixes]

  problems, stats = im.imagine_with_stats(
      task, seeds, 3, seed=0, exclude=exclude, mix={"policy": 1}, sample_questions=sample,
      max_attempts_per_problem=2, policy_batch_size=3)
  assert stats.attempts["policy"] == stats.produced["policy"] + sum(
      stats.rejected["policy"].values())
  for p in problems:
    assert task.verify(p, task.demonstration(p))
    assert p.question not in exclude


@pytest.mark.parametrize("bad", [None, 7, b"3 7 12 5 to 27", ["x"], "x" * 5000])
def test_policy_non_strings_are_rejected(bad):
  task = get_task("countdown")
  out = im.policy_candidates(task, task.generate(0, 3), 4, np.random.default_rng(0),
                             lambda prefixes: [bad] * len(prefixes))
  assert out == [im.UNPARSEABLE] * 4


def test_policy_sampler_contract_violations_raise():
  task = get_task("arithmetic")
  for bad in (lambda p: ["1+2"], lambda p: "1+2", lambda p: None):
    with pytest.raises(ValueError, match="one string per prefix"):
      im.policy_candidates(task, task.generate(0, 3), 4, np.random.default_rng(0), bad)


def test_prefixes_are_prompt_head_plus_part_of_a_seed():
  task = get_task("arithmetic")
  seeds = task.generate(0, 5)
  prefixes, parents = im.question_prefixes(task, seeds, 20, np.random.default_rng(0))
  for prefix, parent in zip(prefixes, parents):
    assert prefix.startswith("Q: ")
    assert parent.question.startswith(prefix[3:]) and len(prefix[3:]) < len(parent.question)


def test_bad_arguments():
  task, train, _ = _splits("arithmetic")
  with pytest.raises(ValueError, match="sample_questions"):
    im.imagine(task, train, 5, seed=0, mix={"policy": 1})
  with pytest.raises(ValueError, match="unknown imagination sources"):
    im.imagine(task, train, 5, seed=0, mix={"rules": 1})
  with pytest.raises(ValueError, match="must not all be 0"):
    im.imagine(task, train, 5, seed=0, mix={"perturb": 0})
  with pytest.raises(ValueError, match=">= 0"):
    im.imagine(task, train, 5, seed=0, mix={"perturb": -1})
  with pytest.raises(ValueError, match="at least one seed"):
    im.imagine(task, [], 5, seed=0)
  assert im.imagine(task, [], 0, seed=0) == []

  class Other(ArithmeticTask):
    name = "other"

  with pytest.raises(ValueError, match="no imagination registered for task 'other'"):
    im.imagine(Other(), train, 5, seed=0)


def test_bad_seeds_are_counted_not_raised():
  task = get_task("countdown")
  seeds = [Problem(question="not a question", answer="1"),
           Problem(question="x", answer="1", data={"numbers": "oops", "target": None}),
           Problem(question="0 -3 1 1 to 5", answer="5",
                   data={"numbers": [0, -3, 1, 1], "target": 5})]
  problems, stats = im.imagine_with_stats(task, seeds, 3, seed=0, max_attempts_per_problem=4)
  assert problems == [] and stats.shortfall == 3
  assert set(stats.rejected["perturb"]) == set(stats.rejected["backward"]) == {im.BAD_SEED}
  arith = get_task("arithmetic")
  seeds = [Problem(question="x", answer="y", data={"start": "a", "ops": 3}),
           Problem(question="1+1", answer="2", data={"start": 1, "ops": [["^", 2]]})]
  problems, stats = im.imagine_with_stats(arith, seeds, 3, seed=0, max_attempts_per_problem=4,
                                          mix={"perturb": 1})
  assert problems == [] and set(stats.rejected["perturb"]) == {im.BAD_SEED, im.INVALID}
  # Backward needs only the seed's answer: the second seed still serves.
  problems = im.imagine(arith, seeds, 3, seed=0, mix={"backward": 1})
  assert len(problems) == 3 and all(p.answer == "2" for p in problems)


def test_split_quota():
  assert im.split_quota(10, {"perturb": 1, "backward": 1, "policy": 1}) == {
      "perturb": 4, "backward": 3, "policy": 3}
  assert sum(im.split_quota(7, {"perturb": 0.6, "backward": 0.4, "policy": 0}).values()) == 7


def test_question_key_merges_equivalent_questions():
  cd, ar = get_task("countdown"), get_task("arithmetic")
  assert im.question_key(cd, "3 7 12 5 to 27") == im.question_key(cd, "5 12 7 3 to 27")
  assert im.question_key(ar, "(7+5)*3") == im.question_key(ar, "(5+7)*3")
  assert im.question_key(ar, "(7-5)*3") != im.question_key(ar, "(5-7)*3")
  assert im.question_key(ar, "junk") == ("text", "junk")
