"""Model text is untrusted: graders must be total, fast and inert."""

import ast
import builtins
import inspect
import os
import time
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphallm import graders, latex_math, latex_normalize, math_equivalence, rational_eval
from alphallm.datasets import gsm8k as gsm8k_data
from alphallm.datasets import math_dataset, tfds_builders
from alphallm.tasks import gsm8k as gsm8k_task
from alphallm.tasks import math_task

FUZZ = settings(max_examples=200, deadline=200, suppress_health_check=[HealthCheck.too_slow])
MATH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "math")

HOSTILE = [
    "9**9**9",
    "A: 9**9**9",
    "The answer is 10^10^10",
    "\\boxed{10^{10^{10}}}",
    "\\boxed{9**9**9}",
    "\\frac{1}{0}",
    "\\boxed{\\frac{1}{0}}",
    "\\boxed{" * 10_000,
    "\\boxed{" * 4_000,  # Under MAX_TEXT_CHARS: read, and unclosed.
    "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_001,
    "\\boxed{" + "{" * 4_000 + "1" + "}" * 4_001,
    "\\fbox{" * 5_000,
    "\\frac" * 5_000,
    "\\boxed{" + "\\frac" * 100 + "}",
    "\\boxed{" + "\\frac12" * 73 + "}",  # Grows when normalised.
    "\\boxed{(" + ",".join(["\\frac{1}{1125899906842624}"] * 18) + ")}",
    "\\sqrt" * 5_000,
    "\\text{" * 5_000,
    "\\boxed{" + "\\text{" * 60 + "}" * 61,
    "1" * 100_000,
    "A: " + "1" * 100_000,
    "The answer is " + "9" * 10_000,
    "\\boxed{" + "9" * 10_000 + "}",
    "\\boxed{" + "9" * 400 + "}",
    "\\boxed{" + "*".join(["9" * 30] * 8) + "}",
    "#### " + "1," * 10_000 + "1",
    "1/" * 10_000 + "1",
    "(" * 10_000 + ")" * 10_000,
    "\\boxed{" + "(" * 200 + "1" + ")" * 200 + "}",
    "\\boxed{" + "-" * 400 + "1}",
    "<<" * 10_000,
    "<<" + "(" * 90 + "1=1>>",
    "<<" + "9" * 90 + "*9=1>>",
    "<<1/0=0>> <<0/0=0>>",
    "-" * 10_000 + "=" + "9" * 10_000,
    "$" * 10_000,
    "The answer is " * 2_000,
    "\n" * 100_000 + "A: 1",
    "\n\n" * 10_000 + "x = 1",
    "\n \n" * 8_000,
    "__import__('os').system('echo pwned')",
    "A: __import__('os').system('echo pwned')",
    "\\boxed{__import__('os').system('echo pwned')}",
    "A: \uff13\uff12",  # Fullwidth digits.
    "\x00" * 1000,
    "\ud800",  # Lone surrogate.
]


def _all_graders(text):
  """Every grader entry point on ``text``; returns what they return."""
  return [
      graders.parse_number(text),
      graders.gsm8k_reference_answer(text),
      graders.extract_gsm8k_answer(text),
      graders.grade_gsm8k(text, "18"),
      graders.grade_gsm8k(text, Fraction(1, 2)),
      graders.last_boxed(text),
      graders.normalize_math_answer(text),
      graders.canonical_math_answer(text),
      graders.math_answers_equal(text, "\\frac{1}{2}"),
      graders.extract_math_answer(text),
      graders.grade_math(text, "5"),
      graders.grade_math("\\boxed{5}", text),
      graders.eval_rational(text),
      graders.check_calculator_annotations(text),
      math_task.option_boundaries(text),
  ]


def _check_types(results):
  (number, ref, gsm_answer, g1, g2, box, norm, canon, eq, math_answer, m1, m2, value, calc,
   bounds) = results
  for x in (number, ref, gsm_answer, value):
    assert x is None or isinstance(x, Fraction)
  for x in (g1, g2, eq, m1, m2):
    assert isinstance(x, bool)
  for x in (box, norm, canon, math_answer):
    assert x is None or (isinstance(x, str) and len(x) <= graders.MAX_ANSWER_CHARS)
  assert isinstance(calc, tuple) and 0 <= calc[1] <= calc[0]
  assert isinstance(bounds, list) and bounds == sorted(set(bounds))
  for x in (number, gsm_answer, value):
    if x is not None:
      assert abs(x.numerator) <= graders.MAX_MAGNITUDE and x.denominator <= graders.MAX_MAGNITUDE


# --- Total and fast on anything. ---


@FUZZ
@given(text=st.text(max_size=400))
def test_graders_never_raise_on_arbitrary_text(text):
  _check_types(_all_graders(text))


_LATEX = st.text(alphabet="\\{}()[]0123456789.,/-+*^=$% abcfrxtedoqsgl\n", max_size=300)
_BOXED = st.builds(lambda a, b: a + "\\boxed{" + b, _LATEX, _LATEX)
_GSM = st.text(alphabet="0123456789,.$%-/ #A:The answrisx=<>*^e\n", max_size=300)


@FUZZ
@given(text=st.one_of(_LATEX, _BOXED, _GSM))
def test_graders_never_raise_on_math_like_text(text):
  _check_types(_all_graders(text))


@FUZZ
@given(text=st.one_of(_LATEX, _BOXED, _GSM))
def test_tasks_never_raise(text, gsm8k_small_task, math_small_task):
  for task in (gsm8k_small_task, math_small_task):
    problem = task.generate(seed=0, num=1)[0]
    assert isinstance(task.verify(problem, text), bool)
    answer = task.extract_answer(text)
    assert answer is None or isinstance(answer, str)


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_is_handled_quickly(text):
  start = time.perf_counter()
  results = _all_graders(text)
  assert time.perf_counter() - start < 0.5
  _check_types(results)
  assert results[3] is False  # grade_gsm8k(text, "18")
  assert results[10] is False  # grade_math(text, "5")


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_after_a_correct_answer(text):
  start = time.perf_counter()
  assert isinstance(graders.grade_gsm8k("The answer is 18.\n" + text, "18"), bool)
  assert isinstance(graders.grade_math("\\boxed{5}\n" + text, "5"), bool)
  assert isinstance(graders.grade_gsm8k(text + "\nThe answer is 18.", "18"), bool)
  assert time.perf_counter() - start < 0.5


# --- Properties. ---

_RATIONALS = st.builds(Fraction, st.integers(-10**12, 10**12), st.integers(1, 10**6))


@FUZZ
@given(value=_RATIONALS)
def test_gsm8k_grades_its_own_canonical_answer(value):
  text = graders.format_number(value)
  assert graders.parse_number(text) == value
  assert graders.grade_gsm8k(f"The answer is {text}.", value)
  assert graders.grade_gsm8k(f"#### {text}", text)
  assert not graders.grade_gsm8k(f"A: {text}", value + 1)


@FUZZ
@given(n=st.integers(-10**15, 10**15))
def test_gsm8k_thousands_separators_and_currency(n):
  sign = "-" if n < 0 else ""
  assert graders.grade_gsm8k(f"A: {sign}${abs(n):,}", n)
  assert graders.grade_gsm8k(f"It is {n:,} dollars.", str(n))


@FUZZ
@given(p=st.integers(-10**6, 10**6), q=st.integers(1, 10**6))
def test_math_fraction_forms_agree(p, q):
  value = Fraction(p, q)
  canonical = graders.format_number(value)
  for form in (f"\\frac{{{p}}}{{{q}}}", f"\\dfrac{{{p}}}{{{q}}}", f"{p}/{q}", canonical):
    assert graders.math_answers_equal(form, canonical), form
    assert graders.grade_math(f"so $\\boxed{{{form}}}$.", canonical), form
  assert not graders.math_answers_equal(f"\\frac{{{p}}}{{{q}}}", graders.format_number(value + 1))


def _expressions(depth):
  """(text, exact value) of random expressions of the rational grammar."""
  leaf = st.integers(0, 10**6).map(lambda n: (str(n), Fraction(n)))
  if depth == 0:
    return leaf
  sub = _expressions(depth - 1)

  def combine(a, op, b):
    (sa, va), (sb, vb) = a, b
    if op == "/":
      return (f"\\frac{{{sa}}}{{{sb}}}", None if vb in (None, 0) or va is None else va / vb)
    value = None if va is None or vb is None else {
        "+": lambda: va + vb, "-": lambda: va - vb, "*": lambda: va * vb}[op]()
    return f"({sa}){op}({sb})", value

  return st.one_of(leaf, st.builds(combine, sub, st.sampled_from("+-*/"), sub),
                   sub.map(lambda a: (f"-({a[0]})", None if a[1] is None else -a[1])))


@FUZZ
@given(expr=_expressions(3))
def test_eval_rational_is_exact(expr):
  text, value = expr
  got = graders.eval_rational(text)
  if value is None or len(text) > graders.MAX_EXPR_CHARS:
    assert got is None
  else:
    assert got == value


@FUZZ
@given(text=st.text(alphabet="ab=$\\boxed{}1 \n\t", max_size=300))
def test_option_boundaries_partition_the_text(text):
  bounds = math_task.option_boundaries(text)
  if not text:
    assert bounds == []
    return
  assert bounds[-1] == len(text) and all(0 < b for b in bounds)
  assert "".join(math_task.split_options(text)) == text


# --- Model text cannot run code. ---

_FORBIDDEN = ("eval", "exec", "compile", "__import__")


def test_graders_and_tasks_do_not_use_eval(monkeypatch, gsm8k_small_task, math_small_task):
  problems = [(t, p) for t in (gsm8k_small_task, math_small_task)
              for p in t.generate(seed=0, num=min(3, len(t)))]
  demos = [(t, p, t.demonstration(p)) for t, p in problems]

  def forbidden(*args, **kwargs):
    raise AssertionError("model text reached eval/exec/compile")

  for fn in _FORBIDDEN:
    monkeypatch.setattr(builtins, fn, forbidden)
  try:
    for task, problem, demo in demos:
      assert task.verify(problem, demo)
      assert task.extract_answer(demo) is not None
      assert not task.verify(problem, "__import__('os').system('echo pwned')")
    for text in HOSTILE:
      _check_types(_all_graders(text))
    assert graders.eval_rational("\\frac{1}{2}+1") == Fraction(3, 2)
    assert graders.check_calculator_annotations("<<48/2=24>>") == (1, 0)
  finally:
    monkeypatch.undo()


def test_model_text_cannot_run_code(tmp_path):
  target = tmp_path / "FILE"
  payload = f"__import__('os').system('touch {target}')"
  texts = [payload, f"A: {payload}", f"\\boxed{{{payload}}}", f"The answer is {payload}",
           f"<<{payload}=1>>", f"exec({payload!r})", f"eval({payload!r})"]
  for text in texts:
    _check_types(_all_graders(text))
    assert graders.grade_gsm8k(text, "123456789") is False
  assert not target.exists()


@pytest.mark.parametrize("module", [graders, latex_math, latex_normalize, math_equivalence,
                                    rational_eval, gsm8k_data, math_dataset, tfds_builders,
                                    gsm8k_task, math_task])
def test_modules_never_call_eval(module):
  tree = ast.parse(inspect.getsource(module))
  banned = {"eval", "exec", "compile", "__import__", "sympify", "literal_eval", "parse_expr"}
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


# --- Small tasks over test data (no shared data needed). ---


@pytest.fixture(scope="module")
def gsm8k_small_task(tmp_path_factory):
  root = tmp_path_factory.mktemp("gsm8k")
  lines = ['{"question": "Tom has 3 apples and buys 4 more. How many apples?", '
           '"answer": "He has 3+4=<<3+4=7>>7 apples.\\n#### 7"}',
           '{"question": "A pen costs $2. How much do 6 pens cost?", '
           '"answer": "6 pens cost 6*2=$<<6*2=12>>12.\\n#### 12"}']
  for split in ("train", "test"):
    (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
  return gsm8k_task.GSM8KTask(data_dir=str(root), split="test")


@pytest.fixture(scope="module")
def math_small_task():
  return math_task.MATHTask(data_dir=MATH_DIR, split="test")
