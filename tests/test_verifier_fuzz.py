"""Model text is untrusted: parsers and verifiers must be total, fast and inert."""

import ast
import builtins
import inspect
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphallm.tasks import Problem, arithmetic, countdown, get_task, parsing

TASK_NAMES = ["arithmetic", "countdown"]
FUZZ = settings(max_examples=200, deadline=200,
                suppress_health_check=[HealthCheck.too_slow])

HOSTILE = [
    "9**9**9",
    "A: 9**9**9",
    "9**9**9=1\nA: 1",
    "1" * 100_000,
    "A: " + "1" * 100_000,
    "1" * 100_000 + "+1=2\nA: 2",
    "(" * 10_000 + ")" * 10_000,
    "A: " + "(" * 10_000 + ")" * 10_000,
    "10000000000000000000000*99999999999999999=1",
    "10000000000000000000000*99999999999999999=1\nA: 1",
    "999999999999*999999999999=999999999998000000000001\nA: 1",
    "__import__('os').system('echo pwned')",
    "A: __import__('os').system('echo pwned')",
    "\u0663+\u0663=\u0666\nA: \u0666",  # Arabic-Indic digits.
    "A: \u0663",
    "A: \uff13\uff12",  # Fullwidth digits.
    "1\x002=3\nA: \x00",
    "\x00" * 1000,
    "A: 1_000",
    "A: 1e3",
    "A: +32",
    "A: 0x20",
    "1/0=0\nA: 0",
    "0/0=0\nA: 0",
    "\n" * 100_000 + "A: 1",
    "1+1=2\n" * 10_000 + "A: 2",
    "-" * 10_000 + "=" + "9" * 10_000,
    "1" + " " * 10_000 + "+1=2",
    "\r\nA: 1\r\n",
    "\ud800",  # Lone surrogate.
]


def _problems(name):
  # Answers above 2, so that no hostile text states the answer by accident.
  problems = get_task(name).generate(seed=0, num=20)
  return [p for p in problems if int(p.answer) > 2][:5]


@pytest.fixture(scope="module", params=TASK_NAMES)
def task_and_problems(request):
  return get_task(request.param), _problems(request.param)


# --- Verifiers and answer extraction are total and fast. ---


# The tasks come from the module-scoped fixture: building one the first time
# (lazy imports) is not part of the time a verifier may take.
@FUZZ
@given(text=st.text(max_size=300))
def test_verify_never_raises_on_arbitrary_text(task_and_problems, text):
  task, problems = task_and_problems
  for p in problems[:2]:
    assert isinstance(task.verify(p, text), bool)
    assert isinstance(task.verify(p, task.prompt(p) + text), bool)
  answer = task.extract_answer(text)
  assert answer is None or isinstance(answer, str)


@FUZZ
@given(steps=st.lists(st.text(alphabet="0123456789+-*/= A:\n", max_size=20), max_size=8),
       answer=st.text(alphabet="0123456789- ", max_size=14))
def test_verify_never_raises_on_step_like_text(task_and_problems, steps, answer):
  task, problems = task_and_problems
  text = "\n".join(steps) + "\nA: " + answer
  for p in problems[:2]:
    assert isinstance(task.verify(p, text), bool)
  got = task.extract_answer(text)
  assert got is None or isinstance(got, str)


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_is_rejected_quickly(task_and_problems, text):
  task, problems = task_and_problems
  start = time.perf_counter()
  for p in problems:
    assert task.verify(p, text) is False
  answer = task.extract_answer(text)
  assert answer is None or (isinstance(answer, str) and len(answer) <= 64)
  for line in text.split("\n")[:10]:
    assert parsing.check_step(line) in (None, True, False)
  assert time.perf_counter() - start < 0.5


def test_hostile_text_after_a_correct_solution_is_rejected(task_and_problems):
  task, problems = task_and_problems
  p = problems[0]
  demo = task.demonstration(p)
  if task.name == "countdown":
    # Countdown checks every line: anything after the answer line fails.
    for text in HOSTILE[:12]:
      assert task.verify(p, demo + "\n" + text) is False
  for text in HOSTILE[:12]:
    assert isinstance(task.verify(p, text + "\n" + demo), bool)


# --- Model text cannot run code. ---


@pytest.mark.parametrize("name", TASK_NAMES)
def test_verifiers_do_not_use_eval(name, monkeypatch):
  task = get_task(name)
  problems = task.generate(seed=1, num=50)
  demos = [task.demonstration(p) for p in problems]

  def forbidden(*args, **kwargs):
    raise AssertionError("model text reached eval/exec/compile")

  for fn in ("eval", "exec", "compile", "__import__"):
    monkeypatch.setattr(builtins, fn, forbidden)
  try:
    for p, demo in zip(problems, demos):
      assert task.verify(p, demo)
      assert task.extract_answer(demo) == p.answer
      assert not task.verify(p, "__import__('os').system('echo pwned')")
  finally:
    monkeypatch.undo()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_model_text_cannot_run_code(name, tmp_path):
  task = get_task(name)
  target = tmp_path / "FILE"
  payload = f"__import__('os').system('touch {target}')"
  texts = [payload, f"A: {payload}", f"{payload}\nA: 1", f"1+1={payload}\nA: 2",
           f"exec({payload!r})\nA: 1", f"eval({payload!r})"]
  for p in task.generate(seed=0, num=3):
    for text in texts:
      assert task.verify(p, text) is False
      task.extract_answer(text)
  for text in texts:
    assert parsing.check_step(text) is None
    assert parsing.parse_int(text) is None
  assert not target.exists()


@pytest.mark.parametrize("module", [parsing, arithmetic, countdown])
def test_task_modules_never_call_eval(module):
  tree = ast.parse(inspect.getsource(module))
  banned = {"eval", "exec", "compile", "__import__", "sympify", "literal_eval"}
  for node in ast.walk(tree):
    if isinstance(node, ast.Call):
      fn = node.func
      name = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", None)
      if isinstance(fn, ast.Attribute) and name == "compile":
        assert getattr(fn.value, "id", None) == "re", ast.unparse(node)  # re.compile only.
        continue
      assert name not in banned, ast.unparse(node)
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
      assert not any("sympy" in n for n in names)


# --- parsing.py. ---


@pytest.mark.parametrize("text,expected", [
    ("0", 0), ("7", 7), ("-7", -7), ("32", 32), ("007", 7),
    ("999999999999", 999_999_999_999), ("-999999999999", -999_999_999_999),
    ("1000000000000", None), ("", None), ("-", None), ("--1", None), ("+1", None),
    (" 1", None), ("1 ", None), ("1.0", None), ("1e3", None), ("1_000", None),
    ("0x1f", None), ("\u0663", None), ("\uff11", None), ("1\x00", None),
    ("9**9**9", None), ("1" * 100_000, None), (None, None), (12, None), (b"12", None),
])
def test_parse_int(text, expected):
  assert parsing.parse_int(text) == expected


def test_parse_int_max_digits():
  assert parsing.parse_int("123", max_digits=3) == 123
  assert parsing.parse_int("1234", max_digits=3) is None
  assert parsing.parse_int("-123", max_digits=3) == -123
  assert parsing.parse_int("1", max_digits=0) is None


@pytest.mark.parametrize("line,expected", [
    ("7+5=12", (7, "+", 5, 12)),
    ("12*3=36", (12, "*", 3, 36)),
    ("36-4=32", (36, "-", 4, 32)),
    ("8/2=4", (8, "/", 2, 4)),
    ("8/3=2", (8, "/", 3, 2)),  # Parsed; the arithmetic is check_step's job.
    ("7--3=10", (7, "-", -3, 10)),
    ("-7*-3=21", (-7, "*", -3, 21)),
    (" 7 + 5 = 12 ", (7, "+", 5, 12)),
    ("7   +5=12", None),
    ("7+5=12\n", None),
    ("7+5", None), ("7+5=", None), ("=12", None), ("7+5=12=12", None),
    ("7^5=12", None), ("7x5=35", None), ("7**5=16807", None), ("(7+5)=12", None),
    ("7.0+5=12", None), ("\u0667+5=12", None), ("A: 12", None), ("", None),
    ("1234567890123+1=1234567890124", None),
    ("1" * 30 + "+" + "1" * 30 + "=2", None),
    ("1" * 100_000 + "+1=2", None),
    (None, None), (7, None),
])
def test_parse_step(line, expected):
  assert parsing.parse_step(line) == expected


@pytest.mark.parametrize("a,op,b,expected", [
    (7, "+", 5, 12), (7, "-", 9, -2), (6, "*", 7, 42), (42, "/", 6, 7), (-42, "/", 6, -7),
    (42, "/", 5, None), (1, "/", 0, None), (0, "/", 0, None), (0, "/", 3, 0),
    (7, "%", 5, None), (7, "**", 5, None), (7, "", 5, None), (7, None, 5, None),
    (10**12, "*", 10**12, 10**24), (10**12 + 1, "+", 1, None), (1, "-", -(10**12) - 1, None),
    (1.0, "+", 1, None), (True, "+", 1, None), ("1", "+", 1, None),
])
def test_apply_op(a, op, b, expected):
  assert parsing.apply_op(a, op, b) == expected


@pytest.mark.parametrize("line,expected", [
    ("7+5=12", True), ("7+5=13", False), ("12*3=36", True), ("8/2=4", True),
    ("8/3=2", False), ("8/0=0", False), ("0/0=0", False), ("7-9=-2", True),
    ("A: 12", None), ("hello", None), ("", None), ("9**9**9", None),
    ("10000000000000000000000*99999999999999999=1", None),
    ("999999999999*999999999999=1", False),
])
def test_check_step(line, expected):
  assert parsing.check_step(line) is expected


def test_format_step_round_trips():
  for a, op, b in [(7, "+", 5), (36, "-", 40), (12, "*", 3), (8, "/", 2)]:
    c = parsing.apply_op(a, op, b)
    line = parsing.format_step(a, op, b, c)
    assert parsing.parse_step(line) == (a, op, b, c)
    assert parsing.check_step(line) is True


@FUZZ
@given(line=st.text(max_size=200))
def test_parsers_are_total(line):
  step = parsing.parse_step(line)
  assert step is None or (len(step) == 4 and step[1] in parsing.OPS)
  assert parsing.check_step(line) in (None, True, False)
  value = parsing.parse_int(line)
  assert value is None or (isinstance(value, int) and abs(value) < 10**12)


@FUZZ
@given(a=st.integers(-10**13, 10**13), b=st.integers(-10**13, 10**13),
       op=st.sampled_from(list("+-*/%^")))
def test_check_step_agrees_with_apply_op(a, b, op):
  result = parsing.apply_op(a, op, b)
  if result is not None:
    assert abs(a) <= 10**12 and abs(b) <= 10**12
    if op == "/":
      assert b != 0 and result * b == a
  line = f"{a}{op}{b}={result if result is not None else 0}"
  ok = parsing.check_step(line)
  if len(line) <= parsing.MAX_LINE_CHARS and op in parsing.OPS and all(
      len(str(abs(x))) <= parsing.MAX_DIGITS for x in (a, b, result or 0)):
    assert ok is (result is not None)
  else:
    assert ok in (None, False)


def test_countdown_parse_question_is_bounded():
  assert countdown.parse_question("3 7 12 5 to 27") == ([3, 7, 12, 5], 27)
  assert countdown.parse_question("3 to 27") is None
  assert countdown.parse_question("1 " * 10_000 + "to 2") is None
  assert countdown.parse_question("3 7 to \u0662") is None
  task = get_task("countdown")
  bogus = Problem(question="not a countdown question", answer="1")
  assert task.verify(bogus, "1+1=2\nA: 1") is False
