"""The tiny rational grammar: exact, bounded evaluation of calculator expressions.

``eval_rational`` reads decimal numerals, ``\\frac{a}{b}``, ``+ - * /`` (also
``\\cdot``, ``\\times``, ``\\div``), unary signs and grouping, and computes the
exact value on ``fractions.Fraction`` built from ints, never evaluating a
string. It is the calculator of GSM8K's ``<<expression=result>>`` annotations
(``graders.check_annotation``) and the first canonicaliser of MATH answers.
"""

from __future__ import annotations

import fractions
import re

from alphallm.latex_normalize import MAX_DEPTH

Fraction = fractions.Fraction

# Most digits a numeral may have (integer and decimal digits together).
MAX_DIGITS = 30
# Longest expression ``eval_rational`` reads, and most tokens in it.
MAX_EXPR_CHARS = 256
MAX_EXPR_TOKENS = 128
# Largest numerator / denominator of any intermediate value of the evaluator.
MAX_MAGNITUDE = 10**60


def decimal_value(text: str) -> Fraction | None:
  """The exact value of ``123``, ``1.50`` or ``.5`` (no sign, no commas)."""
  whole, _, frac = text.partition(".")
  if len(whole) + len(frac) > MAX_DIGITS:
    return None
  return Fraction(int(whole or "0") * 10**len(frac) + int(frac or "0"), 10**len(frac))


_decimal = decimal_value


_EXPR_TOKEN_RE = re.compile(
    r"[ ]{0,4}(?:([0-9]+(?:\.[0-9]+)?|\.[0-9]+)|(\\frac|\\cdot|\\times|\\div)(?![A-Za-z])"
    r"|([-+*/(){}]))", re.ASCII)
_OP_ALIASES = {"\\cdot": "*", "\\times": "*", "\\div": "/"}


def _tokenize(expr: str) -> list[tuple[str, object]] | None:
  """``[("num", Fraction) | ("op", str)]``, or None outside the grammar."""
  tokens: list[tuple[str, object]] = []
  pos, end = 0, len(expr.rstrip(" "))
  while pos < end:
    m = _EXPR_TOKEN_RE.match(expr, pos, end)
    if m is None or len(tokens) >= MAX_EXPR_TOKENS:
      return None
    if m.group(1) is not None:
      value = _decimal(m.group(1))
      if value is None:
        return None
      tokens.append(("num", value))
    else:
      op = m.group(2) or m.group(3)
      tokens.append(("op", _OP_ALIASES.get(op, op)))
    pos = m.end()
  return tokens


class _Parser:
  """Recursive descent over tokens, with a depth bound and a size bound."""

  def __init__(self, tokens: list[tuple[str, object]]):
    self.tokens = tokens
    self.pos = 0
    self.depth = 0

  def peek_op(self) -> object:
    if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "op":
      return self.tokens[self.pos][1]
    return None

  def take(self, op: str) -> bool:
    if self.peek_op() == op:
      self.pos += 1
      return True
    return False

  def expr(self) -> Fraction | None:
    """``expr := term (('+'|'-') term)*``."""
    value = self.term()
    while value is not None and self.peek_op() in ("+", "-"):
      op = self.tokens[self.pos][1]
      self.pos += 1
      rhs = self.term()
      value = None if rhs is None else _bounded(value + rhs if op == "+" else value - rhs)
    return value

  def term(self) -> Fraction | None:
    """``term := unary (('*'|'/') unary)*``."""
    value = self.unary()
    while value is not None and self.peek_op() in ("*", "/"):
      op = self.tokens[self.pos][1]
      self.pos += 1
      rhs = self.unary()
      if rhs is None or (op == "/" and rhs == 0):
        return None
      value = _bounded(value * rhs if op == "*" else value / rhs)
    return value

  def unary(self) -> Fraction | None:
    """``unary := ('-'|'+') unary | atom``, at most ``MAX_DEPTH`` deep."""
    self.depth += 1
    try:
      if self.depth > MAX_DEPTH:
        return None
      if self.take("-"):
        inner = self.unary()
        return None if inner is None else -inner
      if self.take("+"):
        return self.unary()
      return self.atom()
    finally:
      self.depth -= 1

  def atom(self) -> Fraction | None:
    """``atom := number | '(' expr ')' | '{' expr '}' | '\\frac' group group``."""
    if self.pos >= len(self.tokens):
      return None
    kind, tok = self.tokens[self.pos]
    self.pos += 1
    if kind == "num":
      return tok  # type: ignore[return-value]
    if tok in ("(", "{"):
      return self.group(")" if tok == "(" else "}")
    if tok == "\\frac":
      if not self.take("{"):
        return None
      num = self.group("}")
      if num is None or not self.take("{"):
        return None
      den = self.group("}")
      return None if den is None or den == 0 else _bounded(num / den)
    return None

  def group(self, close: str) -> Fraction | None:
    """The rest of a bracketed group whose opening token was consumed."""
    value = self.expr()
    return value if value is not None and self.take(close) else None


def _bounded(value: Fraction) -> Fraction | None:
  if abs(value.numerator) > MAX_MAGNITUDE or value.denominator > MAX_MAGNITUDE:
    return None
  return value


def eval_rational(expr: object) -> Fraction | None:
  """The exact value of an expression in a tiny grammar, or None.

  Grammar: decimal numerals (``12``, ``0.5``, ``.5``), ``\\frac{a}{b}``,
  ``a/b``, ``+ - * /`` (also ``\\cdot``, ``\\times``, ``\\div``), unary
  ``-``/``+``, and grouping with ``( )`` or ``{ }``. Refused (None): anything
  else, division by zero, more than ``MAX_EXPR_CHARS`` characters or
  ``MAX_EXPR_TOKENS`` tokens, nesting deeper than ``MAX_DEPTH``, numerals
  over ``MAX_DIGITS`` digits and values beyond ``MAX_MAGNITUDE``.
  """
  if not isinstance(expr, str) or not expr or len(expr) > MAX_EXPR_CHARS:
    return None
  tokens = _tokenize(expr)
  if not tokens:
    return None
  parser = _Parser(tokens)
  value = parser.expr()
  return value if value is not None and parser.pos == len(tokens) else None
