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


def format_step(a: int, op: str, b: int, c: int) -> str:
  """The canonical text of a step, ``f"{a}{op}{b}={c}"`` (no delimiter)."""
  return f"{a}{op}{b}={c}"


def _is_bounded_int(x: object) -> bool:
  return (isinstance(x, int) and not isinstance(x, bool)
          and -MAX_ABS_OPERAND <= x <= MAX_ABS_OPERAND)
