"""Graders: bounded, safe answer checkers for GSM8K and MATH.

These are the ground-truth outcome rewards of the real-data tasks and the
foundation of the paper's tool-augmented ("symbolic-check") ORM. Everything a
model writes is untrusted, so every function here is total (returns
None / False on anything unexpected, never raises on a ``str`` argument) and
bounded:

* texts longer than ``MAX_TEXT_CHARS`` and answers longer than
  ``MAX_ANSWER_CHARS`` are refused unread;
* numerals with more than ``MAX_DIGITS`` digits are refused, and so are
  numbers written next to an exponent (``9**9**9``, ``10^10^10``, ``1e5``);
* brace matching and expression parsing stop at ``MAX_DEPTH`` levels of
  nesting, expressions at ``MAX_EXPR_CHARS`` characters, and every
  intermediate value of the rational evaluator is bounded by
  ``MAX_MAGNITUDE``;
* nothing is ever evaluated by Python (no eval/exec, no symbolic-math
  library): arithmetic is exact, on ``fractions.Fraction`` built from ints.

GSM8K (``grade_gsm8k``): the reference answer follows ``#### `` on the last
line of the reference solution. A model's answer is the number after its
last answer statement that carries a number (``####``, ``The answer is``, a
line starting with our answer prefix ``A:``, or ``\\boxed{}``; ``The answer
is correct`` carries none); after the last ``=`` of that line if it has one;
or, with no such statement, the last number of the text. A statement (or,
without one, a text) that leaves a bracket unclosed is malformed: no answer.
Numbers may carry thousands separators (``1,000``), currency and units
(``$5``, ``5 dollars``, ``20%``), a sign (``-3``) and decimals (``5.0``,
``.5``), or be a fraction (``3/4``). Answers are compared exactly as
rationals.

MATH (``grade_math``): the answer is the content of the last
``\\boxed{...}`` / ``\\fbox{...}``, or of the last answer statement after it
that carries a value (``The answer is correct`` carries none and is skipped).
Two answers are equal when their canonical forms (``canonical_math_answer``)
are, or when ``math_equivalence.answers_equivalent`` finds them equivalent:
``latex_math`` parses both into expression trees (never evaluating a string)
and compares exact rational values, or numeric values at seeded random points
for free variables, with tuples, intervals, sets and equations compared by
structure. See ``docs/grading.md``.

``check_calculator_annotations`` is the calculator over GSM8K's
``<<expression=result>>`` annotations.
"""

from __future__ import annotations

import collections
import fractions
import math
import re

from alphallm import math_equivalence
# MAX_DIGITS, MAX_EXPR_CHARS, MAX_EXPR_TOKENS, MAX_MAGNITUDE and eval_rational are part of this
# module's API.
from alphallm.rational_eval import (MAX_DIGITS, MAX_EXPR_CHARS, MAX_EXPR_TOKENS,  # noqa: F401
                                    MAX_MAGNITUDE, eval_rational)
from alphallm.rational_eval import decimal_value as _decimal
# MAX_ANSWER_CHARS, MAX_DEPTH and normalize_math_answer are part of this module's API.
from alphallm.latex_normalize import (BOX_COMMANDS, MAX_ANSWER_CHARS, MAX_DEPTH,  # noqa: F401
                                      THOUSANDS_RE, box_at, normalize_math_answer)

Fraction = fractions.Fraction

# Texts longer than this are refused unread.
MAX_TEXT_CHARS = 32_768
# Answer statements looked at, from the last one back.
MAX_STATEMENTS = 64
# Most elements of a tuple or interval answer.
MAX_ELEMENTS = 32
# GSM8K calculator annotations ``<<expression=result>>``: longest body.
MAX_ANNOTATION_CHARS = 96

# --- Numerals. ---

# A decimal numeral; commas only between digits (validated afterwards).
_NUM_CORE = r"[0-9]+(?:,[0-9]+)*(?:\.[0-9]+)?|\.[0-9]+"
_NUM_SPAN_RE = re.compile(rf"(?P<num>{_NUM_CORE})(?:/(?P<den>{_NUM_CORE}))?", re.ASCII)
_THOUSANDS_RE = THOUSANDS_RE
# A whole-string numeral: sign, currency, numeral or fraction, percent.
_NUMBER_RE = re.compile(
    rf"\s{{0,8}}(?P<sign>[-\u2212]?)\s{{0,2}}\$?\s{{0,2}}(?P<sign2>[-\u2212]?)"
    rf"(?P<body>(?:{_NUM_CORE})(?:/(?:{_NUM_CORE}))?)\s{{0,2}}%?\.?\s{{0,8}}", re.ASCII)
# Text right after / before a numeral that makes it part of an exponent or of
# a non-decimal literal: such a numeral is refused rather than misread.
_BAD_AFTER_RE = re.compile(r"\^|\*\*|_[0-9]|[eE][-+0-9]|[xX][0-9a-fA-F]|[bBoO][0-9]", re.ASCII)
_BAD_BEFORE_RE = re.compile(r"(?:\^|\*\*|[0-9.][eE][-+]?|0[xXbBoO]|[0-9]_)$", re.ASCII)
_MINUS_SIGNS = "-\u2212"


def _ungroup(text: str) -> str | None:
  """``text`` without thousands separators, or None if they are misplaced."""
  if "," not in text:
    return text
  if _THOUSANDS_RE.fullmatch(text) is None:
    return None
  return text.replace(",", "")


def _numeral_value(num: str, den: str | None) -> Fraction | None:
  """Value of ``num`` or ``num/den``; None when too long or dividing by zero."""
  num = _ungroup(num)
  den = None if den is None else _ungroup(den)
  if num is None:
    return None
  value = _decimal(num)
  if den is not None:
    denominator = _decimal(den)
    if value is None or not denominator:
      return None
    value /= denominator
  return value


def parse_number(text: object) -> Fraction | None:
  """A whole string that is one number: ``"1,000"``, ``"$-5"``, ``"3/4"``, ``"20%"``.

  Args:
    text: untrusted text (surrounding spaces are allowed).

  Returns:
    The exact value, or None if ``text`` is anything else (including
    numerals over ``MAX_DIGITS`` digits, exponents and division by zero).
  """
  if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
    return None
  m = _NUMBER_RE.fullmatch(text)
  if m is None:
    return None
  num, _, den = m.group("body").partition("/")
  value = _numeral_value(num, den or None)
  if value is None:
    return None
  if m.group("sign") and m.group("sign2"):
    return None
  return -value if m.group("sign") or m.group("sign2") else value


def format_number(value: Fraction | int) -> str:
  """The canonical text of a rational: ``"18"``, ``"-2.5"``, ``"1/3"``.

  Integers in plain digits; terminating decimals in shortest decimal form;
  other rationals as ``p/q`` in lowest terms. Equal values give equal text.
  """
  value = Fraction(value)
  n, d = value.numerator, value.denominator
  if d == 1:
    return str(n)
  twos = fives = 0
  rest = d
  while rest % 2 == 0:
    rest, twos = rest // 2, twos + 1
  while rest % 5 == 0:
    rest, fives = rest // 5, fives + 1
  if rest != 1:
    return f"{n}/{d}"
  places = max(twos, fives)
  scaled = abs(n) * 10**places // d
  whole, frac = divmod(scaled, 10**places)
  sign = "-" if n < 0 else ""
  return f"{sign}{whole}.{str(frac).zfill(places).rstrip('0')}"


def _number_spans(text: str) -> list[tuple[int, int, str, str | None]]:
  """Numerals in ``text`` as ``(start, end, num, den)``, in order.

  A numeral with misplaced commas (``3,4,5``) is a list: each part is its own
  numeral.
  """
  spans = []
  for m in _NUM_SPAN_RE.finditer(text):
    num, den = m.group("num"), m.group("den")
    if "," in num and _THOUSANDS_RE.fullmatch(num) is None and den is None:
      pos = m.start()
      for part in num.split(","):
        spans.append((pos, pos + len(part), part, None))
        pos += len(part) + 1
    else:
      spans.append((m.start(), m.end(), num, den))
  return spans


def _span_value(text: str, span: tuple[int, int, str, str | None]) -> Fraction | None:
  """The signed value of a numeral found in ``text``, or None if refused."""
  start, end, num, den = span
  if _BAD_AFTER_RE.match(text, end) or _BAD_BEFORE_RE.search(text[max(0, start - 3):start]):
    return None
  value = _numeral_value(num, den)
  if value is None:
    return None
  # A sign directly before the numeral (or before its "$"), not after a word.
  pos = start - 1
  if pos >= 0 and text[pos] == "$":
    pos -= 1
  if pos >= 0 and text[pos] in _MINUS_SIGNS and (pos == 0 or not (
      text[pos - 1].isalnum() or text[pos - 1] in ")]}")):
    value = -value
  return value


# --- Boxed answers and answer statements. ---


def last_boxed(text: object) -> str | None:
  """The content of the last ``\\boxed{...}`` or ``\\fbox{...}`` in ``text``.

  Returns:
    The content with surrounding spaces stripped, or None if there is no box,
    the last one is unclosed, too deep, too long or empty, or ``text`` is
    over ``MAX_TEXT_CHARS``.
  """
  if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
    return None
  pos = max(text.rfind(c) for c in BOX_COMMANDS)
  if pos < 0:
    return None
  content = box_at(text, pos)
  content = None if content is None else content.strip()
  return content or None


# Where a final answer is stated. Groups: 1 a box command, else the statement
# runs to the end of its line.
_STATEMENT_RE = re.compile(
    r"(\\boxed|\\fbox)|####|(?i:\bthe (?:final )?answer is\b:?)|^[ \t]{0,8}A:", re.M)
# Words that may precede a stated value ("the answer is indeed 3").
_FILLER_RE = re.compile(
    r"(?:[\s:,]|\b(?:indeed|therefore|thus|then|still|now|also|clearly|simply|just|"
    r"definitely|certainly|actually|really)\b){0,16}", re.I)
# A statement that starts like this states no value ("the answer is correct").
_NO_VALUE_RE = re.compile(
    r"(?:correct|right|wrong|incorrect|confirmed|verified|consistent|valid|invalid|true|"
    r"false|not|that|this|as|above|below|given|shown|clear|obvious|the same|unchanged|"
    r"reasonable|plausible|likely|unlikely|boxed|in|at|on|what|which|because|since|"
    r"equal|found|calculated|computed|determined|positive|negative)\b", re.I)


# A statement's line may go on after its sentence: "12. I checked it."
_SENTENCE_END_RE = re.compile(r"[.!?;](?=\s+\S)")


def _statement_body(text: str, m: re.Match) -> str:
  """What an answer statement states: its box content, or the rest of its line."""
  if m.group(1):
    return box_at(text, m.start()) or ""
  end = text.find("\n", m.end())
  end = len(text) if end < 0 else end
  body = text[m.end():min(end, m.end() + MAX_ANSWER_CHARS)]
  body = body[_FILLER_RE.match(body).end():]
  sentence_end = _SENTENCE_END_RE.search(body)
  return body if sentence_end is None else body[:sentence_end.start()]


def _carries_value(body: str, needs_number: bool) -> bool:
  """Does a (non-box) statement body state a value, a number if ``needs_number``?"""
  if not body.strip() or _NO_VALUE_RE.match(body):
    return False
  return not needs_number or bool(_NUM_SPAN_RE.search(body))


def _final_statement(text: str, needs_number: bool) -> str | None:
  """The body of the last answer statement that carries a value, or None.

  A box always carries its content; one that cannot be read (unclosed, too
  deep, too long) is a statement with nothing in it: ``""``. Only the last
  ``MAX_STATEMENTS`` statements are looked at.
  """
  matches = collections.deque(_STATEMENT_RE.finditer(text), maxlen=MAX_STATEMENTS)
  for m in reversed(matches):
    body = _statement_body(text, m)
    if m.group(1) or _carries_value(body, needs_number):
      return body
  return None


def _leaves_bracket_open(text: str) -> bool:
  """Does ``text`` open a ``(``, ``[`` or ``{`` it never closes (a malformed text)?"""
  depth = 0
  for ch in text:
    if ch in "([{":
      depth += 1
    elif ch in ")]}" and depth:
      depth -= 1
  return depth > 0


# --- GSM8K. ---


def gsm8k_reference_answer(solution: object) -> Fraction | None:
  """The answer of a GSM8K reference solution: the number after its last ``####``."""
  if not isinstance(solution, str) or len(solution) > MAX_TEXT_CHARS:
    return None
  _, marker, answer = solution.rpartition("####")
  return parse_number(answer) if marker else None


def extract_gsm8k_answer(text: object) -> Fraction | None:
  """A model's final numeric answer (see the module docstring), or None.

  None when there is no number where the answer should be, the number is
  refused (too many digits, an exponent, division by zero), or the text it
  is read from leaves a bracket unclosed.
  """
  if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
    return None
  statement = _final_statement(text, needs_number=True)
  if statement is None:
    spans = _number_spans(text)
    if not spans or _leaves_bracket_open(text):
      return None
    return _span_value(text, spans[-1])
  if _leaves_bracket_open(statement):
    return None
  statement = statement.rpartition("=")[2]
  spans = _number_spans(statement)
  return _span_value(statement, spans[0]) if spans else None


def grade_gsm8k(completion: object, reference: object) -> bool:
  """Does ``completion`` state the reference answer (exactly, as rationals)?

  Args:
    completion: untrusted model text.
    reference: the reference answer, a number (``"1,000"``, ``18``,
      ``Fraction(3, 4)``) or a whole reference solution ending ``#### N``.
  """
  if isinstance(reference, (int, Fraction)) and not isinstance(reference, bool):
    expected = Fraction(reference)
  else:
    expected = parse_number(reference)
    if expected is None:
      expected = gsm8k_reference_answer(reference)
  if expected is None:
    return False
  got = extract_gsm8k_answer(completion)
  return got is not None and got == expected


# --- MATH answers. ---


def _split_top_level(s: str) -> list[str] | None:
  """``s`` split at commas outside brackets, or None if unbalanced / too many."""
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(s):
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
      if depth < 0:
        return None
    elif ch == "," and depth == 0:
      parts.append(s[start:i])
      start = i + 1
      if len(parts) > MAX_ELEMENTS:
        return None
  parts.append(s[start:])
  return parts if depth == 0 else None


def _canonical_atom(s: str) -> str:
  value = eval_rational(s)
  if value is None:
    value = math_equivalence.exact_answer_value(s)
  return s if value is None else format_number(value)


def canonical_math_answer(answer: object) -> str | None:
  """The canonical form of a MATH answer: equal answers have equal forms.

  The normal form (``normalize_math_answer``) with every rational number in
  the tiny grammar of ``eval_rational`` replaced by its ``format_number``
  (so ``0.5``, ``\\frac12`` and ``1/2`` all become ``0.5``), applied
  elementwise to tuples and intervals (``(a, b)``, ``[a, b)``, ``a, b``).
  None for a missing or empty answer, or one (or its form) over
  ``MAX_ANSWER_CHARS``.
  """
  s = normalize_math_answer(answer)
  if not s:
    return None
  opener, closer, inner = "", "", s
  if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
    opener, closer, inner = s[0], s[-1], s[1:-1]
  parts = _split_top_level(inner)
  if parts is None or len(parts) < 2 or not all(parts):
    canonical = _canonical_atom(s)
  else:
    canonical = opener + ",".join(_canonical_atom(p) for p in parts) + closer
  return canonical if len(canonical) <= MAX_ANSWER_CHARS else None


def math_answers_equal(a: object, b: object) -> bool:
  """Are two MATH answers equivalent?

  True when their ``canonical_math_answer`` forms are equal, or when
  ``math_equivalence.answers_equivalent`` finds them equivalent (bounded:
  anything over its size, depth, value or time limits is not equivalent).
  """
  ca = canonical_math_answer(a)
  cb = canonical_math_answer(b)
  if ca is None or cb is None:
    return False
  return ca == cb or math_equivalence.answers_equivalent(a, b) is True


_MATH_DELIMITERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def extract_math_answer(text: object) -> str | None:
  """A model's final MATH answer, raw (not normalised), or None.

  The last answer statement that carries a value wins: the content of a
  ``\\boxed{}``/``\\fbox{}``, or the rest of a line after ``A:``, ``The
  answer is`` or ``####`` (without a trailing ``.`` and surrounding ``$``,
  ``\\(...\\)``). ``The answer is correct`` states no value and is skipped.
  """
  if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
    return None
  statement = _final_statement(text, needs_number=False)
  if statement is None:
    return None
  statement = statement.strip().rstrip(".").strip()
  for opener, closer in _MATH_DELIMITERS:
    if len(statement) >= len(opener) + len(closer) and statement.startswith(opener) \
        and statement.endswith(closer):
      statement = statement[len(opener):len(statement) - len(closer)].strip()
      break
  if not statement or len(statement) > MAX_ANSWER_CHARS:
    return None
  return statement


def grade_math(completion: object, reference: object) -> bool:
  """Does ``completion`` state an answer equivalent to ``reference``?

  Args:
    completion: untrusted model text.
    reference: the reference answer (e.g. the boxed content of the reference
      solution).
  """
  got = extract_math_answer(completion)
  return got is not None and math_answers_equal(got, reference)


# --- Calculator annotations. ---

_ANNOTATION_RE = re.compile(r"<<([^<>]{1,%d})>>" % MAX_ANNOTATION_CHARS)
_RESULT_RE = re.compile(r"[ ]{0,3}(-?)([0-9]+(?:\.([0-9]+))?|\.([0-9]+))[ ]{0,3}", re.ASCII)


def check_annotation(body: object) -> bool | None:
  """Is the annotation body ``expression=result`` right? None if it is not of that form.

  A result written with ``d`` decimals may also be the exact value rounded
  (half up) or truncated to ``d`` decimals, as GSM8K writes ``10/3=3.33``.
  """
  if not isinstance(body, str) or len(body) > MAX_ANNOTATION_CHARS or body.count("=") != 1:
    return None
  expr, result = body.split("=")
  m = _RESULT_RE.fullmatch(result)
  value = eval_rational(expr)
  if m is None or value is None:
    return None
  claimed = _decimal(m.group(2))
  if claimed is None:
    return None
  claimed = -claimed if m.group(1) else claimed
  if value == claimed:
    return True
  places = len(m.group(3) or m.group(4) or "")
  if not places:
    return False
  scaled, target = value * 10**places, claimed * 10**places
  return target in (math.trunc(scaled), math.floor(scaled + Fraction(1, 2)))


def check_calculator_annotations(text: object) -> tuple[int, int]:
  """``(num_checked, num_wrong)`` over the ``<<expression=result>>`` annotations in ``text``.

  Expressions are read with ``eval_rational``; an annotation that is not
  ``expression=result`` in that grammar is not a calculation and is not
  counted. Texts that are not strings or are over ``MAX_TEXT_CHARS`` are not
  read: ``(0, 0)``.
  """
  if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
    return 0, 0
  checked = wrong = 0
  for m in _ANNOTATION_RE.finditer(text):
    ok = check_annotation(m.group(1))
    if ok is not None:
      checked += 1
      wrong += not ok
  return checked, wrong
