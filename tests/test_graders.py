"""Graders: fixtures of tricky model outputs, the calculator, and GSM8K's references."""

import os
from fractions import Fraction

import pytest

from alphallm import graders
from alphallm.datasets import gsm8k as gsm8k_data

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GSM8K_DIR = os.environ.get("ALPHALLM_GSM8K_DIR") or os.path.join(
    _REPO_ROOT, "..", "shared", "data", "gsm8k")
needs_gsm8k = pytest.mark.skipif(
    not os.path.isdir(GSM8K_DIR),
    reason=f"GSM8K data not found at {GSM8K_DIR} (set ALPHALLM_GSM8K_DIR)")

# (model output, reference answer, expected verdict)
GSM8K_CASES = [
    ("The answer is 18.", "18", True),
    ("#### 1,000", "1000", True),
    ("A: 1,000", "1,000", True),
    ("She makes $18 every day at the market.", "18", True),
    ("The answer is $5.00", "5", True),
    ("A: 0.50", ".5", True),
    ("A: 18.0", "18", True),
    ("So the answer is 3/4 of a cup.", "0.75", True),
    ("x = 2/4", "0.5", True),
    ("The answer is 5.5", "11/2", True),
    ("The answer is 20%", "20", True),
    ("The answer is -5 degrees.", "-5", True),
    ("He ends with 5 - 8 = -3 dollars.", "-3", True),
    ("The difference is 5-3=2", "2", True),
    ("A: \u22127", "-7", True),  # Unicode minus sign.
    ("Total: $1,234.50", "1234.5", True),
    ("The answer is 18 dollars per 2 days", "18", True),
    ("A: 2 + 3 = 5", "5", True),
    ("so the total is \\boxed{42}", "42", True),
    ("THE FINAL ANSWER IS 7", "7", True),
    ("It costs 5 dollars each. The answer is: 12.", "12", True),
    ("We count 3,4,5 apples", "5", True),
    ("The answer is 18, wait, no.\nThe answer is 20.", "20", True),  # The last statement wins.
    ("The answer is 20.\nQ: Tom has 5 apples.", "20", True),
    ("A: 18\nA: 19", "18", False),
    ("A: 9", "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 9", True),  # Reference solution.
    ("The answer is eighteen", "18", False),
    ("The answer is 1e3", "1000", False),
    ("9**9**9", "9", False),
    ("The answer is 10^10^10", "10", False),
    ("A: 2^10", "2", False),
    ("A: " + "1" * 31, "1" * 30, False),
    ("The answer is 1/0", "0", False),
    ("The answer is 1,00", "100", False),
    ("A: 0x10", "0", False),
    ("A: 1_000", "1000", False),
    ("the answer is \u0663", "3", False),  # Arabic-Indic digit.
    ("", "0", False),
    ("The answer is 19", "18", False),
    ("The answer is 18", "not a number", False),
    # A last statement that carries no number does not hide the answer before it.
    ("The answer is 18. Double-checking, the answer is correct.", "18", True),
    ("#### 18\nThe answer is correct.", "18", True),
    ("So she has 18 eggs. I verified that the answer is right.", "18", True),
    ("The answer is not 17; it is 18.", "17", False),
    # A malformed text (a bracket left open) is not graded as a number.
    ("(" * 60 + "18", "18", False),
    ("A: ((((18", "18", False),
    ("The answer is (18", "18", False),
    ("Step 1) 6*3 = 18\nStep 2) done: 18", "18", True),  # Closers alone are fine.
]

MATH_CASES = [
    ("$\\boxed{\\frac{1}{2}}$", "0.5", True),
    ("\\boxed{\\dfrac12}", "\\frac{1}{2}", True),
    ("\\boxed{.5}", "\\frac12", True),
    ("\\boxed{\\tfrac{-3}{4}}", "-0.75", True),
    ("\\boxed{-\\frac{3}{4}}", "\\frac{-3}{4}", True),
    ("\\boxed{\\frac{\\frac12}{3}}", "\\frac16", True),
    ("\\boxed{3\\cdot 4}", "12", True),
    ("\\boxed{x = 5}", "5", True),
    ("\\boxed{2x+3}", "y = 2x + 3", True),
    ("\\boxed{5\\text{ cm}}", "5", True),
    ("\\boxed{60}", "60\\text{ cm}^2", True),
    ("\\boxed{70^\\circ}", "70", True),
    ("\\boxed{10,\\!000}", "10000", True),
    ("\\boxed{\\$5}", "5", True),
    ("\\boxed{20\\%}", "20", True),
    ("\\boxed{5\\sqrt2}", "5\\sqrt{2}", True),
    ("\\boxed{\\left( 5, 2 \\right)}", "(5,2)", True),
    ("\\boxed{(0.5, 3)}", "\\left(\\frac{1}{2}, 3\\right)", True),
    ("\\boxed{(2, 5)}", "(5, 2)", False),
    ("\\boxed{[1, 2)}", "[1,2]", False),
    ("\\boxed{1,2,3}", "1, 2, 3", True),
    ("\\boxed{\\{1,2\\}}", "\\{1, 2\\}", True),
    ("\\boxed{\\text{(A)}}", "(A)", True),
    ("\\boxed{\\pi}", "\\pi", True),
    ("\\boxed{2\\pi}", "\\pi", False),
    ("\\boxed{1} and later \\boxed{2}", "2", True),
    ("\\boxed{1} and later \\boxed{2}", "1", False),
    ("\\fbox{7}", "7", True),
    ("\\boxed 7$.", "7", True),
    ("The answer is $\\frac{5}{6}$.", "\\frac{5}{6}", True),
    ("A: \\frac{3}{8}", "\\dfrac{3}{8}", True),
    ("\\boxed{5}\n\nA: 6", "6", True),
    ("\\boxed{0.3333}", "\\frac13", False),
    ("\\boxed{\\frac{1}{0}}", "0", False),
    ("\\boxed{}", "0", False),
    ("\\boxed{9**9**9}", "9", False),
    ("\\boxed{10^{10^{10}}}", "10", False),
    ("\\boxed{" * 1000, "1", False),
    ("no answer here", "5", False),
    # Issue 17: equivalence that needs more than a string normal form.
    ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt2}{2}", True),
    ("\\boxed{\\sqrt{12}}", "2\\sqrt3", True),
    ("\\boxed{(x+1)^2}", "x^2+2x+1", True),
    ("\\boxed{10^5}", "100000", True),
    ("\\boxed{0.\\overline{6}}", "\\frac23", True),
    ("\\boxed{1{,}000}", "1000", True),
    ("\\boxed{10^{5}}", "10^5", True),
    ("We get \\boxed{3}. Double-checking, the answer is correct.", "3", True),
    ("\\boxed{3}. The answer is boxed above.", "3", True),
    ("\\boxed{(x+1)^2}", "x^2+1", False),
]


@pytest.mark.parametrize("text,reference,expected", GSM8K_CASES)
def test_gsm8k_fixtures(text, reference, expected):
  assert graders.grade_gsm8k(text, reference) is expected


@pytest.mark.parametrize("text,reference,expected", MATH_CASES)
def test_math_fixtures(text, reference, expected):
  assert graders.grade_math(text, reference) is expected


def test_fixture_sets_are_large_enough():
  assert len(GSM8K_CASES) >= 25 and len(MATH_CASES) >= 25
  for cases in (GSM8K_CASES, MATH_CASES):
    assert {e for _, _, e in cases} == {True, False}


@pytest.mark.parametrize("text,expected", [
    ("18", Fraction(18)), ("1,000", Fraction(1000)), ("$5", Fraction(5)), ("-$5", Fraction(-5)),
    ("$-5", Fraction(-5)), (" -3.50 ", Fraction(-7, 2)), ("3/4", Fraction(3, 4)),
    ("20%", Fraction(20)), (".5", Fraction(1, 2)), ("5.", Fraction(5)),
    ("1,00", None), ("1e3", None), ("9**9**9", None), ("1/0", None), ("--5", None),
    ("1" * 31, None), ("", None), ("five", None), (None, None), (5, None),
])
def test_parse_number(text, expected):
  assert graders.parse_number(text) == expected


@pytest.mark.parametrize("value,text", [
    (Fraction(18), "18"), (Fraction(-5, 2), "-2.5"), (Fraction(1, 8), "0.125"),
    (Fraction(-1, 40), "-0.025"), (Fraction(1, 3), "1/3"), (Fraction(-2, 6), "-1/3"), (0, "0"),
])
def test_format_number(value, text):
  assert graders.format_number(value) == text
  assert graders.parse_number(text) == value


@pytest.mark.parametrize("expr,expected", [
    ("1+2*3", Fraction(7)), ("(1+2)*3", Fraction(9)), ("-3--3", Fraction(0)),
    ("7/2", Fraction(7, 2)), ("0.1+0.2", Fraction(3, 10)), (".5*4", Fraction(2)),
    ("\\frac{1}{2}+\\frac{1}{3}", Fraction(5, 6)), ("\\frac{\\frac{1}{2}}{3}", Fraction(1, 6)),
    ("3\\cdot4", Fraction(12)), ("6\\div4", Fraction(3, 2)), ("{2}", Fraction(2)),
    ("1/0", None), ("\\frac{1}{0}", None), ("2(3)", None), ("2^3", None), ("9**9", None),
    ("1e5", None), ("x+1", None), ("\\frac12", None), ("(1", None), ("1)", None), ("", None),
    ("-" * 40 + "1", None), ("(" * 40 + "1" + ")" * 40, None), ("1" * 31, None),
    ("*".join(["9" * 30] * 3), None),
])
def test_eval_rational(expr, expected):
  assert graders.eval_rational(expr) == expected


@pytest.mark.parametrize("text,expected", [
    ("x \\boxed{5} y", "5"), ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{a}\\fbox{b}", "b"),
    ("\\boxed{\\{1\\}}", "\\{1\\}"), ("\\boxed 5$", "5"), ("\\boxed{ }", None), ("\\boxed{5", None),
    ("no box", None), ("\\boxed{" + "{" * 40 + "}" * 41, None),
])
def test_last_boxed(text, expected):
  assert graders.last_boxed(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("a <<48/2=24>>24 b", (1, 0)),
    ("<<10/3=3.33>> <<2/3=0.67>> <<2/3=0.66>> <<1.5*2=3>>", (4, 0)),  # Rounded or truncated.
    ("<<2*3=7>>", (1, 1)),
    ("<<2/3=0.7>>", (1, 0)),
    ("<<2/3=0.8>>", (1, 1)),
    ("<<12=12>> <<(1+2)*3=9>> <<-4+1=-3>>", (3, 0)),
    ("<<abc>> <<1+(2=3>> <<1=2=3>> <<9**9**9=1>>", (0, 0)),  # Not calculations.
    ("<<" + "1+" * 100 + "1=101>>", (0, 0)),  # Too long to read.
    ("no annotations", (0, 0)),
])
def test_check_calculator_annotations(text, expected):
  assert graders.check_calculator_annotations(text) == expected


def test_calculator_does_not_read_overlong_text():
  assert graders.check_calculator_annotations("<<2*3=7>>" * 10_000) == (0, 0)


@pytest.mark.parametrize("answer,canonical", [
    ("\\frac{1}{2}", "0.5"), ("\\dfrac{2}{6}", "1/3"), ("x=-\\frac{3}{4}", "-0.75"),
    ("\\left(1, \\frac12\\right)", "(1,0.5)"), ("[0.5, 2)", "[0.5,2)"), ("10,\\!000", "10000"),
    ("5\\text{ inches}", "5"), ("\\text{Evelyn}", "Evelyn"), ("\\sqrt2", "\\sqrt{2}"),
    ("\\boxed{7}", "7"), ("", None), (None, None), ("x" * 600, None),
])
def test_canonical_math_answer(answer, canonical):
  assert graders.canonical_math_answer(answer) == canonical


# --- GSM8K's own reference solutions. ---


@needs_gsm8k
@pytest.mark.parametrize("split,size", [("test", 1319), ("train", 7473)])
def test_gsm8k_reference_solutions_grade_as_their_answers(split, size):
  """Extracting from every reference solution reproduces its final answer: 100%."""
  examples = gsm8k_data.read_split(GSM8K_DIR, split)
  assert len(examples) == size
  reproduced = 0
  for ex in examples:
    expected = graders.parse_number(ex.answer)
    assert expected is not None, ex.line
    reproduced += (graders.extract_gsm8k_answer(ex.solution) == expected
                   and graders.grade_gsm8k(ex.solution, ex.answer)
                   and graders.gsm8k_reference_answer(ex.solution) == expected)
  assert reproduced == size, f"{reproduced}/{size} = {reproduced / size:.4f}"


@needs_gsm8k
def test_gsm8k_reference_annotations_are_right():
  checked = wrong = 0
  for ex in gsm8k_data.read_split(GSM8K_DIR, "test"):
    c, w = graders.check_calculator_annotations(ex.solution)
    checked, wrong = checked + c, wrong + w
  assert checked >= 4200 and wrong == 0
