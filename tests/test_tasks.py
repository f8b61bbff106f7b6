"""Tests of the shipped tasks: generators, formats, verifiers, splits, solver."""

import collections

import pytest

from alphallm.tasks import Problem, get_task, make_splits
from alphallm.tasks import arithmetic, countdown
from alphallm.tokenizer import CharTokenizer

TASK_NAMES = ["arithmetic", "countdown"]


@pytest.fixture(scope="module")
def problems():
  return {name: get_task(name).generate(seed=0, num=500) for name in TASK_NAMES}


# --- Generators. ---


@pytest.mark.parametrize("name", TASK_NAMES)
def test_generate_is_deterministic(name):
  task = get_task(name)
  first = task.generate(seed=3, num=50)
  again = get_task(name).generate(seed=3, num=50)
  other = task.generate(seed=4, num=50)
  assert [p.to_json() for p in first] == [p.to_json() for p in again]
  assert [p.question for p in first] != [p.question for p in other]
  assert len(first) == 50
  assert task.generate(seed=3, num=0) == []


@pytest.mark.parametrize("name", TASK_NAMES)
def test_problems_are_json_round_trippable(name, problems):
  for p in problems[name][:50]:
    assert Problem.from_json(p.to_json()) == p


def test_arithmetic_knobs_are_respected():
  task = get_task("arithmetic", min_ops=3, max_ops=5, max_operand=6, ops="+*",
                  max_value=150)
  ops_counts = collections.Counter()
  for p in task.generate(seed=1, num=300):
    start, chain = p.data["start"], p.data["ops"]
    assert 3 <= len(chain) <= 5
    assert 1 <= start <= 6
    value = start
    for op, b in chain:
      assert op in "+*"
      assert 1 <= b <= 6
      value = value + b if op == "+" else value * b
      assert 0 <= value <= 150
    assert p.answer == str(value)
    assert p.question == arithmetic.format_question(start, [tuple(s) for s in chain])
    ops_counts[len(chain)] += 1
  assert set(ops_counts) == {3, 4, 5}


def test_arithmetic_default_format(problems):
  task = get_task("arithmetic")
  p = Problem(question="((7+5)*3)-4", answer="32",
              data={"start": 7, "ops": [["+", 5], ["*", 3], ["-", 4]]})
  assert task.demonstration(p) == "7+5=12\n12*3=36\n36-4=32\nA: 32"
  assert task.prompt(p) == "Q: ((7+5)*3)-4\n"
  # Without data the chain is read back from the question.
  bare = Problem(question="((7+5)*3)-4", answer="32")
  assert task.demonstration(bare) == task.demonstration(p)
  for p in problems["arithmetic"]:
    assert 2 <= len(p.data["ops"]) <= 4
    assert arithmetic.parse_question(p.question) == (
        p.data["start"], [tuple(s) for s in p.data["ops"]])


def test_arithmetic_division_is_exact():
  task = get_task("arithmetic", ops="/", max_operand=9, min_ops=1, max_ops=2)
  for p in task.generate(seed=0, num=100):
    value = p.data["start"]
    for op, b in p.data["ops"]:
      assert op == "/" and value % b == 0
      value //= b
    assert task.verify(p, task.demonstration(p))


def test_countdown_knobs_are_respected():
  task = get_task("countdown", num_numbers=3, max_number=9, ops="+-*", max_value=50)
  for p in task.generate(seed=2, num=300):
    numbers, target, solution = p.data["numbers"], p.data["target"], p.data["solution"]
    assert len(numbers) == 3
    assert all(1 <= n <= 9 for n in numbers)
    assert len(solution) == 2  # All numbers used.
    assert all(op in "+-*" and 0 < c <= 50 for _, op, _, c in solution)
    assert solution[-1][3] == target and p.answer == str(target)
    assert target not in numbers
    assert p.question == countdown.format_question(numbers, target)
    assert countdown.parse_question(p.question) == (numbers, target)


def test_countdown_default_format():
  task = get_task("countdown")
  p = Problem(question="3 7 12 5 to 27", answer="27",
              data={"numbers": [3, 7, 12, 5], "target": 27,
                    "solution": [[12, "+", 3, 15], [15, "+", 7, 22], [22, "+", 5, 27]]})
  assert task.demonstration(p) == "12+3=15\n15+7=22\n22+5=27\nA: 27"
  assert task.prompt(p) == "Q: 3 7 12 5 to 27\n"
  # Without data the instance is read from the question and solved.
  bare = Problem(question="3 7 12 5 to 27", answer="27")
  assert task.verify(bare, task.demonstration(bare))
  assert task.verify(bare, task.demonstration(p))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_demonstrations_verify(name, problems):
  task = get_task(name)
  for p in problems[name]:
    demo = task.demonstration(p)
    assert task.verify(p, demo), (p, demo)
    assert task.verify(p, demo + task.step_delimiter)
    assert task.extract_answer(demo) == p.answer
    assert not demo.endswith("\n")
    steps = task.split_steps(demo)
    assert steps[-1] == f"A: {p.answer}"
    assert all(not s.startswith("A: ") for s in steps[:-1])


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_emitted_char_is_encodable(name, problems):
  task = get_task(name)
  tok = CharTokenizer()
  for p in problems[name]:
    text = task.prompt(p) + task.demonstration(p)
    assert tok.decode(tok.encode(text)) == text
    assert task.prompt(p).endswith(task.step_delimiter)


@pytest.mark.parametrize("name,limit", [("arithmetic", 64), ("countdown", 64)])
def test_default_texts_are_short(name, limit, problems):
  task = get_task(name)
  lengths = [len(task.prompt(p) + task.demonstration(p)) for p in problems[name]]
  assert max(lengths) <= limit


# --- Answers and verifiers. ---


@pytest.mark.parametrize("name", TASK_NAMES)
def test_extract_answer(name):
  task = get_task(name)
  assert task.extract_answer("1+2=3\nA: 3") == "3"
  assert task.extract_answer("1+2=3\nA:  3 \n") == "3"
  assert task.extract_answer("A: 5\nA: 6") == "5"
  assert task.extract_answer("1+2=3\n") is None
  assert task.extract_answer("A: ") is None
  assert task.extract_answer("") is None
  assert task.extract_answer("xA: 3") is None
  assert len(task.extract_answer("A: " + "9" * 1000)) == 64


def test_arithmetic_verify_checks_the_outcome():
  task = get_task("arithmetic")
  p = Problem(question="((7+5)*3)-4", answer="32")
  assert task.verify(p, "7+5=12\n12*3=36\n36-4=32\nA: 32")
  assert task.verify(p, "A: 32")
  assert not task.verify(p, "7+5=12\n12*3=36\n36-4=32\nA: 33")
  assert not task.verify(p, "7+5=12\n12*3=36\n36-4=32\n")
  assert not task.verify(p, "A: 32.0")
  assert not task.verify(p, "A: thirty-two")
  assert not task.verify(p, "A: 3" + "2" * 20)


COUNTDOWN = Problem(question="4 4 6 2 to 12", answer="12",
                    data={"numbers": [4, 4, 6, 2], "target": 12})


@pytest.mark.parametrize("completion", [
    "4+4=8\n8+6=14\n14-2=12\nA: 12",
    "6*2=12\nA: 12",  # Numbers may be left unused.
    "4*4=16\n16-6=10\n10+2=12\nA: 12",  # Both copies of 4.
    "6/2=3\n4*3=12\nA: 12\n",
    " 6 * 2 = 12\nA: 12",
])
def test_countdown_accepts_correct_solutions(completion):
  assert get_task("countdown").verify(COUNTDOWN, completion)


@pytest.mark.parametrize("completion,why", [
    ("4+4=9\n9+6=15\n15-3=12\nA: 12", "wrong arithmetic"),
    ("6+6=12\nA: 12", "6 used twice but given once"),
    ("4*2=8\n8+4=12\n12-4=8\n8+4=12\nA: 12", "4 used three times"),
    ("4+4=8\n8+8=16\nA: 12", "a result reused after it was used up"),
    ("6+2=8\n8+4=12\n12-2=10\nA: 10", "2 reused"),
    ("4+4=8\n8+6=14\nA: 14", "wrong final target"),
    ("4+4=8\n8+6=14\nA: 12", "last step does not give the target"),
    ("6+2=8\nA: 12", "last step does not give the target"),
    ("4/6=0\n6*2=12\nA: 12", "division not exact"),
    ("6-2=4\n4-4=0\n4*2=8\nA: 12", "non-positive result"),
    ("4-6=-2\n6*2=12\nA: 12", "negative result"),
    ("4+4=8\n8+6=14\n14-2=12", "missing answer line"),
    ("4+4=8\n8+6=14\n14-2=12\n", "missing answer line"),
    ("A: 12", "no steps"),
    ("4+4=8\nso\n8+6=14\n14-2=12\nA: 12", "malformed line"),
    ("4+4=8\n\n8+6=14\n14-2=12\nA: 12", "empty line"),
    ("6*2=12\nA: 12\n6-2=4", "text after the answer line"),
    ("6*2=12\nA: 012x", "malformed answer"),
    ("6*2=12\nA: 13", "answer is not the target"),
])
def test_countdown_rejects_bad_solutions(completion, why):
  assert not get_task("countdown").verify(COUNTDOWN, completion), why


def test_countdown_respects_its_ops():
  task = get_task("countdown", ops="+-")
  assert not task.verify(COUNTDOWN, "6*2=12\nA: 12")
  assert task.verify(COUNTDOWN, "6+4=10\n10+2=12\nA: 12")


# --- Splits. ---


@pytest.mark.parametrize("name", TASK_NAMES)
def test_make_splits_are_disjoint(name):
  task = get_task(name)
  train, held_out = make_splits(task, seed=0, num_train=300, num_eval=100)
  assert len(train) == 300 and len(held_out) == 100
  train_q = {p.question for p in train}
  eval_q = {p.question for p in held_out}
  assert len(train_q) == 300 and len(eval_q) == 100
  assert not train_q & eval_q
  again = make_splits(task, seed=0, num_train=300, num_eval=100)
  assert again == (train, held_out)


def test_make_splits_raises_when_impossible():
  # One op from {+}, operands in 1..2: only 4 distinct questions exist.
  task = get_task("arithmetic", min_ops=1, max_ops=1, max_operand=2, ops="+")
  with pytest.raises(ValueError, match="distinct eval problems"):
    make_splits(task, seed=0, num_train=0, num_eval=10)
  with pytest.raises(ValueError, match="train problems distinct"):
    make_splits(task, seed=0, num_train=10, num_eval=2)
  with pytest.raises(ValueError, match="split sizes"):
    make_splits(task, seed=0, num_train=-1, num_eval=2)


# --- Solver. ---


def test_solver_solves_generated_problems(problems):
  task = get_task("countdown")
  for p in problems["countdown"][:200]:
    numbers, target = p.data["numbers"], p.data["target"]
    solution = countdown.solve(numbers, target, max_value=200)
    assert solution is not None, p
    assert countdown.check_solution(numbers, target, solution)
    demo = "".join(f"{a}{op}{b}={c}\n" for a, op, b, c in solution) + f"A: {target}"
    assert task.verify(p, demo)


def test_solver_returns_none_when_impossible():
  assert countdown.solve([1, 1], 100, max_value=200) is None
  assert countdown.solve([2, 3], 5, max_value=4) is None  # 2+3 exceeds max_value.
  assert countdown.solve([7, 7, 7], 1000, max_value=200, ops="+") is None
  assert countdown.solve([2, 3], 5, max_value=10) == [(3, "+", 2, 5)]
  assert countdown.solve([2, 3], 5, max_value=10, ops="*-") is None


def test_solver_is_bounded():
  with pytest.raises(ValueError, match="numbers"):
    countdown.solve([1] * 7, 5, max_value=200)
  with pytest.raises(ValueError, match="positive"):
    countdown.solve([0, 3], 3, max_value=200)
  # A worst-ish case finishes: six numbers, unreachable target.
  assert countdown.solve([13, 17, 19, 11, 7, 3], 100_000, max_value=200) is None


# --- Registry and knobs. ---


def test_get_task_unknown_name():
  with pytest.raises(ValueError, match="unknown task 'nope'.*arithmetic.*countdown"):
    get_task("nope")


@pytest.mark.parametrize("name,knobs,match", [
    ("arithmetic", {"num_numbers": 3}, "bad knobs"),
    ("countdown", {"max_ops": 3}, "bad knobs"),
    ("arithmetic", {"ops": "+^"}, "ops"),
    ("arithmetic", {"ops": ""}, "ops"),
    ("arithmetic", {"min_ops": 3, "max_ops": 2}, "max_ops"),
    ("arithmetic", {"max_operand": 0}, "max_operand"),
    ("countdown", {"num_numbers": 7}, "num_numbers"),
    ("countdown", {"num_numbers": 1}, "num_numbers"),
    ("countdown", {"max_number": 2.5}, "max_number"),
    ("countdown", {"ops": "++"}, "ops"),
])
def test_get_task_bad_knobs(name, knobs, match):
  with pytest.raises(ValueError, match=match):
    get_task(name, **knobs)


def test_unsatisfiable_knobs_raise():
  task = get_task("arithmetic", min_ops=2, max_ops=2, max_operand=9, ops="+", max_value=1)
  with pytest.raises(ValueError, match="max_value"):
    task.generate(seed=0, num=1)
  task = get_task("countdown", num_numbers=2, max_number=1, ops="-")
  with pytest.raises(ValueError, match="admit"):
    task.generate(seed=0, num=1)
