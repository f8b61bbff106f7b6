"""Bounded, safe parsers for untrusted model text.

Everything a model writes is untrusted. The parsers here never evaluate text
(no eval/exec, no symbolic-math library): they accept a small, explicit
grammar with bounded lengths and return ``None`` on anything else. Regexes are
applied with ``fullmatch`` to inputs whose length is checked first, and every
quantifier is bounded, so no input can make them run long.

The grammar of a step line is ``a<op>b=c`` with ``op`` one of ``+ - * /`` and
integers written in ASCII digits with an optional leading ``-`` (at most two
spaces are tolerated around each token). Arithmetic is exact integer
arithmetic; division is defined only when it is exact.

``check_step`` is the calculator a tool-augmented outcome reward model can use
to check each ``a op b = c`` step of a solution.
"""

from __future__ import annotations

import re

# Longest line ``parse_step`` looks at; longer lines are rejected unread.
MAX_LINE_CHARS = 64
# Most digits an integer may have.
MAX_DIGITS = 12
# Largest absolute value of an operand ``apply_op`` computes with.
MAX_ABS_OPERAND = 10**12
# The operations of a step.
OPS = "+-*/"

_INT_RE = r"-?[0-9]{1,%d}" % MAX_DIGITS
_SP = r"[ ]{0,2}"
_STEP_RE = re.compile(
    rf"{_SP}({_INT_RE}){_SP}([-+*/]){_SP}({_INT_RE}){_SP}={_SP}({_INT_RE}){_SP}",
    re.ASCII)
_INT_CACHE: dict[int, re.Pattern[str]] = {}
# Strict equation lines (``check_step_line``): unsigned, no spaces, numbers of at
# most CALCULATOR_MAX_DIGITS digits (the in-graph calculator's int32 bound).
CALCULATOR_MAX_DIGITS = 4
_STEP_PREFIX_RE = re.compile(r"([0-9]+)(?:[-+*/](?:([0-9]+)(?:=([0-9]*))?)?)?", re.ASCII)
_COMPACT_STEP_RE = re.compile(r"([0-9]{1,4})([-+*/])([0-9]{1,4})=([0-9]{1,4})", re.ASCII)


def _int_pattern(max_digits: int) -> re.Pattern[str]:
  pat = _INT_CACHE.get(max_digits)
  if pat is None:
    pat = re.compile(r"-?[0-9]{1,%d}" % max_digits, re.ASCII)
    _INT_CACHE[max_digits] = pat
  return pat


def parse_int(s: object, max_digits: int = MAX_DIGITS) -> int | None:
  """An integer written as an optional ``-`` and 1..``max_digits`` ASCII digits.

  Args:
    s: untrusted text. Surrounding whitespace is NOT stripped.
    max_digits: the most digits accepted (between 1 and 100).

  Returns:
    The integer, or None if ``s`` is not exactly such a numeral (unicode
    digits, ``+`` signs, spaces, underscores and exponents are all rejected).
  """
  if not isinstance(s, str) or not 1 <= max_digits <= 100:
    return None
  if not s or len(s) > max_digits + 1:
    return None
  if _int_pattern(max_digits).fullmatch(s) is None:
    return None
  return int(s)


def parse_step(line: object) -> tuple[int, str, int, int] | None:
  """Parses a step line ``a<op>b=c``.

  Args:
    line: untrusted text of one line (without its delimiter).

  Returns:
    ``(a, op, b, c)`` with ``op`` in ``"+-*/"``, or None if ``line`` is not a
    step line (including lines longer than ``MAX_LINE_CHARS``). The arithmetic
    is not checked: see ``check_step``.
  """
  if not isinstance(line, str) or len(line) > MAX_LINE_CHARS:
    return None
  m = _STEP_RE.fullmatch(line)
  if m is None:
    return None
  a, op, b, c = m.groups()
  return int(a), op, int(b), int(c)


def apply_op(a: object, op: object, b: object) -> int | None:
  """The exact integer result of ``a op b``, or None if it is not defined.

  Args:
    a: left operand, an ``int`` with ``abs(a) <= MAX_ABS_OPERAND``.
    op: one of ``"+-*/"``.
    b: right operand, same bounds as ``a``.

  Returns:
    The result; None for an unknown op, non-int or out-of-range operands,
    division by zero or inexact division.
  """
  if not (_is_bounded_int(a) and _is_bounded_int(b)):
    return None
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  if op == "/":
    if b == 0 or a % b != 0:
      return None
    return a // b
  return None


def check_step(line: object) -> bool | None:
  """Is the step line ``line`` arithmetically correct?

  Returns:
    None if ``line`` is not a step line (see ``parse_step``); otherwise True
    iff ``apply_op(a, op, b)`` is defined and equals ``c``.
  """
  step = parse_step(line)
  if step is None:
    return None
  a, op, b, c = step
  result = apply_op(a, op, b)
  return result is not None and result == c


def check_step_line(line: object, strict: bool = False) -> bool | None:
  """The calculator's judgement of one solution line.

  Without ``strict`` this is ``check_step``. With ``strict`` (tasks whose
  solution lines are equation steps, ``Task.equation_steps``) a line that
  starts with an ASCII digit is an attempted step: it must be a compact
  unsigned ``a<op>b=c`` with a correct result, anything else (``21*4=2C2``,
  ``16*5=``, ``22-7-72``) is a wrong step (False). Such a line whose
  well-formed prefix has a number longer than ``CALCULATOR_MAX_DIGITS``
  digits is not judged (None), like other lines. This is the host twin of
  ``alphallm.tools.count_wrong_steps`` (they agree on every line; tested).
  """
  if not strict or not isinstance(line, str) or not line[:1].isdigit() or not line[0].isascii():
    return check_step(line)
  prefix = _STEP_PREFIX_RE.match(line[:4 * CALCULATOR_MAX_DIGITS])
  if any(g is not None and len(g) > CALCULATOR_MAX_DIGITS for g in prefix.groups()):
    return None
  if len(line) > MAX_LINE_CHARS:
    return False
  m = _COMPACT_STEP_RE.fullmatch(line)
  if m is None:
    return False
  a, op, b, c = m.groups()
  result = apply_op(int(a), op, int(b))
  return result is not None and result == int(c)


def format_step(a: int, op: str, b: int, c: int) -> str:
  """The canonical text of a step, ``f"{a}{op}{b}={c}"`` (no delimiter)."""
  return f"{a}{op}{b}={c}"


def _is_bounded_int(x: object) -> bool:
  return (isinstance(x, int) and not isinstance(x, bool)
          and -MAX_ABS_OPERAND <= x <= MAX_ABS_OPERAND)
