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
last answer statement (``####``, ``The answer is``, a line starting with our
answer prefix ``A:``, or ``\\boxed{}``); after the last ``=`` of that line if
it has one; or, with no answer statement, the last number of the text.
Numbers may carry thousands separators (``1,000``), currency and units
(``$5``, ``5 dollars``, ``20%``), a sign (``-3``) and decimals (``5.0``,
``.5``), or be a fraction (``3/4``). Answers are compared exactly as
rationals.

MATH (``grade_math``): the answer is the content of the last
``\\boxed{...}`` / ``\\fbox{...}`` (or of the last answer statement after
it). Answers are normalised (``normalize_math_answer``) and then compared by
their canonical form (``canonical_math_answer``): the exact value when the
answer is a rational number in a tiny grammar (``eval_rational``), tuples and
intervals elementwise, anything else as a normalised string.

``check_calculator_annotations`` is the calculator over GSM8K's
``<<expression=result>>`` annotations.
"""

from __future__ import annotations

import fractions
import math
import re

Fraction = fractions.Fraction

# Texts longer than this are refused unread.
MAX_TEXT_CHARS = 32_768
# Answers (a boxed content, an answer line) longer than this are refused.
MAX_ANSWER_CHARS = 512
# Most digits a numeral may have (integer and decimal digits together).
MAX_DIGITS = 30
# Deepest nesting of braces or parentheses the parsers follow.
MAX_DEPTH = 32
# Longest expression ``eval_rational`` reads, and most tokens in it.
MAX_EXPR_CHARS = 256
MAX_EXPR_TOKENS = 128
# Largest numerator / denominator of any intermediate value of the evaluator.
MAX_MAGNITUDE = 10**60
# Most elements of a tuple or interval answer.
MAX_ELEMENTS = 32
# GSM8K calculator annotations ``<<expression=result>>``: longest body.
MAX_ANNOTATION_CHARS = 96

# --- Numerals. ---

# A decimal numeral; commas only between digits (validated afterwards).
_NUM_CORE = r"[0-9]+(?:,[0-9]+)*(?:\.[0-9]+)?|\.[0-9]+"
_NUM_SPAN_RE = re.compile(rf"(?P<num>{_NUM_CORE})(?:/(?P<den>{_NUM_CORE}))?", re.ASCII)
_THOUSANDS_RE = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?", re.ASCII)
# A whole-string numeral: sign, currency, numeral or fraction, percent.
_NUMBER_RE = re.compile(
    rf"\s{{0,8}}(?P<sign>[-\u2212]?)\s{{0,2}}\$?\s{{0,2}}(?P<sign2>[-\u2212]?)"
    rf"(?P<body>(?:{_NUM_CORE})(?:/(?:{_NUM_CORE}))?)\s{{0,2}}%?\.?\s{{0,8}}", re.ASCII)
# Text right after / before a numeral that makes it part of an exponent or of
# a non-decimal literal: such a numeral is refused rather than misread.
_BAD_AFTER_RE = re.compile(r"\^|\*\*|_[0-9]|[eE][-+0-9]|[xX][0-9a-fA-F]|[bBoO][0-9]", re.ASCII)
_BAD_BEFORE_RE = re.compile(r"(?:\^|\*\*|[0-9.][eE][-+]?|0[xXbBoO]|[0-9]_)$", re.ASCII)
_MINUS_SIGNS = "-\u2212"


def _decimal(text: str) -> Fraction | None:
  """The exact value of ``123``, ``1.50`` or ``.5`` (no sign, no commas)."""
  whole, _, frac = text.partition(".")
  if len(whole) + len(frac) > MAX_DIGITS:
    return None
  return Fraction(int(whole or "0") * 10**len(frac) + int(frac or "0"), 10**len(frac))


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


# --- Brace matching and boxed answers. ---


def _brace_content(text: str, open_pos: int) -> tuple[str, int] | None:
  """``(content, end)`` of the brace group opening at ``text[open_pos] == "{"``.

  Escaped braces (``\\{``) do not count. None if the group is unclosed,
  deeper than ``MAX_DEPTH`` or longer than ``MAX_ANSWER_CHARS``.
  """
  if open_pos >= len(text) or text[open_pos] != "{":
    return None
  depth, pos = 0, open_pos
  limit = min(len(text), open_pos + MAX_ANSWER_CHARS + 2)
  while pos < limit:
    ch = text[pos]
    if ch == "\\":
      pos += 2
      continue
    if ch == "{":
      depth += 1
      if depth > MAX_DEPTH:
        return None
    elif ch == "}":
      depth -= 1
      if depth == 0:
        return text[open_pos + 1:pos], pos + 1
    pos += 1
  return None


_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BARE_BOX_RE = re.compile(r" {1,4}([^\s$]{1,64})")


def _box_at(text: str, pos: int) -> str | None:
  """The content of the box command starting at ``pos``, or None."""
  cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, pos))
  after = pos + len(cmd)
  if text.startswith("{", after):
    group = _brace_content(text, after)
    return None if group is None else group[0]
  m = _BARE_BOX_RE.match(text, after)  # "\boxed 5", as MATH sometimes writes.
  return None if m is None else m.group(1)


def last_boxed(text: object) -> str | None:
  """The content of the last ``\\boxed{...}`` or ``\\fbox{...}`` in ``text``.

  Returns:
    The content with surrounding spaces stripped, or None if there is no box,
    the last one is unclosed, too deep, too long or empty, or ``text`` is
    over ``MAX_TEXT_CHARS``.
  """
  if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
    return None
  pos = max(text.rfind(c) for c in _BOX_COMMANDS)
  if pos < 0:
    return None
  content = _box_at(text, pos)
  content = None if content is None else content.strip()
  return content or None


# --- Answer statements. ---

# Where a final answer is stated. Groups: 1 a box command, else the statement
# runs to the end of its line.
_STATEMENT_RE = re.compile(
    r"(\\boxed|\\fbox)|####|(?i:\bthe (?:final )?answer is\b:?)|^[ \t]{0,8}A:", re.M)


def _last_statement(text: str) -> str | None:
  """The text of the last answer statement, or None if there is none.

  A box that cannot be read (unclosed, too deep, too long) is a statement
  with no text: ``""``.
  """
  last = None
  for last in _STATEMENT_RE.finditer(text):
    pass
  if last is None:
    return None
  if last.group(1):
    return _box_at(text, last.start()) or ""
  end = text.find("\n", last.end())
  end = len(text) if end < 0 else end
  return text[last.end():min(end, last.end() + MAX_ANSWER_CHARS)]


# --- GSM8K. ---


def gsm8k_reference_answer(solution: object) -> Fraction | None:
  """The answer of a GSM8K reference solution: the number after its last ``####``."""
  if not isinstance(solution, str) or len(solution) > MAX_TEXT_CHARS:
    return None
  _, marker, answer = solution.rpartition("####")
  return parse_number(answer) if marker else None


def extract_gsm8k_answer(text: object) -> Fraction | None:
  """A model's final numeric answer (see the module docstring), or None.

  None when there is no number where the answer should be, or the number is
  refused (too many digits, an exponent, division by zero).
  """
  if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
    return None
  statement = _last_statement(text)
  if statement is None:
    spans = _number_spans(text)
    return _span_value(text, spans[-1]) if spans else None
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


# --- The tiny rational grammar. ---

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


# --- MATH answers. ---

_REMOVALS = ("\n", "\\!", "\\displaystyle", "^{\\circ}", "^\\circ", "\\$", "$", "\\%", "%",
             "\\,", "\\;", "\\:")
_REPLACEMENTS = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\mbox{", "\\text{"),
                 ("\\ ", " "))
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm)(?=\{)")
_EXPONENT_RE = re.compile(r"\^(?:[0-9]|\{[0-9]{1,3}\})$")
_VARIABLE_RE = re.compile(r"[A-Za-z](?:_\{?[0-9A-Za-z]\}?)?|\\[a-z]{2,8}", re.ASCII)
_MAX_UNIT_PASSES = 4


def _text_groups(s: str) -> list[tuple[int, int, str]]:
  """``(start, end, content)`` of each ``\\text{...}``-like group, in order."""
  groups = []
  for m in _TEXT_CMD_RE.finditer(s):
    if groups and m.start() < groups[-1][1]:
      continue  # Nested inside the previous group.
    group = _brace_content(s, m.end())
    if group is not None:
      groups.append((m.start(), group[1], group[0]))
  return groups


def _strip_text(s: str) -> str:
  """Drops trailing ``\\text{...}`` units (``5\\text{ cm}^2``), then unwraps the rest."""
  for _ in range(_MAX_UNIT_PASSES):
    groups = _text_groups(s)
    if not groups:
      return s
    start, end, _ = groups[-1]
    tail = s[end:].strip()
    head = s[:start].strip()
    if not head or (tail and _EXPONENT_RE.fullmatch(tail) is None):
      break
    s = head
  out, pos = [], 0
  for start, end, content in _text_groups(s):
    out += [s[pos:start], content]
    pos = end
  return "".join(out) + s[pos:]


def _fix_command_args(s: str, command: str, num_args: int) -> str:
  """Braces the single-character arguments: ``\\frac12`` -> ``\\frac{1}{2}``.

  ``\\sqrt2`` -> ``\\sqrt{2}``; ``\\frac{1}2`` -> ``\\frac{1}{2}``. Arguments
  already in braces are kept; ``\\sqrt[3]{x}`` is kept.
  """
  pieces = s.split(command)
  out = [pieces[0]]
  for piece in pieces[1:]:
    out.append(command)
    rest = piece
    for _ in range(num_args):
      if not rest or rest[0] == "[":
        break
      if rest[0] == "{":
        group = _brace_content(rest, 0)
        if group is None:
          break
        out.append(rest[:group[1]])
        rest = rest[group[1]:]
      elif rest[0] == "\\":
        break
      else:
        out.append("{" + rest[0] + "}")
        rest = rest[1:]
    out.append(rest)
  return "".join(out)


def _strip_variable(s: str) -> str:
  """``x=5`` -> ``5`` when the left side is a single variable."""
  if s.count("=") != 1:
    return s
  lhs, rhs = s.split("=")
  return rhs if rhs and _VARIABLE_RE.fullmatch(lhs) else s


def _unwrap_box(s: str) -> str:
  """``\\boxed{5}`` -> ``5`` when the whole answer is one box."""
  for cmd in _BOX_COMMANDS:
    if s.startswith(cmd):
      content = _box_at(s, 0)
      if content is not None and s.endswith("}") and len(content) == len(s) - len(cmd) - 2:
        return content.strip()
  return s


def normalize_math_answer(answer: object) -> str | None:
  """A MATH answer in normal form, for string comparison.

  Strips a surrounding box, ``\\left``/``\\right``, ``\\!`` and other
  spacing commands, ``$``, ``%``, ``^\\circ``, trailing ``\\text{...}``
  units (other ``\\text{}`` groups are unwrapped), thousands separators
  (``10,\\!000``), all whitespace, a single-variable left side (``x = 5``)
  and a final ``.``; rewrites ``\\dfrac``/``\\tfrac`` to ``\\frac``,
  ``\\frac12`` to ``\\frac{1}{2}``, ``\\sqrt2`` to ``\\sqrt{2}`` and ``.5``
  to ``0.5``.

  Returns:
    The normal form, or None if ``answer`` is not a string or it or its
    normal form is longer than ``MAX_ANSWER_CHARS``.
  """
  if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
    return None
  s = _unwrap_box(answer.strip())
  for old in _REMOVALS:
    s = s.replace(old, "")
  for old, new in _REPLACEMENTS:
    s = s.replace(old, new)
  s = _LEFT_RIGHT_RE.sub("", s)
  s = _strip_text(s)
  if _THOUSANDS_RE.fullmatch(s.strip().lstrip("-")):
    s = s.replace(",", "")
  s = "".join(s.split())
  s = _strip_variable(s)
  s = _fix_command_args(s, "\\frac", 2)
  s = _fix_command_args(s, "\\sqrt", 1)
  s = s.rstrip(".")
  if s.startswith("."):
    s = "0" + s
  elif s.startswith("-."):
    s = "-0" + s[1:]
  return s if len(s) <= MAX_ANSWER_CHARS else None


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
  """Are two MATH answers equivalent (same ``canonical_math_answer``)?"""
  ca = canonical_math_answer(a)
  return ca is not None and ca == canonical_math_answer(b)


def extract_math_answer(text: object) -> str | None:
  """A model's final MATH answer, raw (not normalised), or None.

  The last answer statement wins: the content of a ``\\boxed{}``/``\\fbox{}``,
  or the rest of a line after ``A:``, ``The answer is`` or ``####`` (without
  a trailing ``.`` and surrounding ``$``).
  """
  if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
    return None
  statement = _last_statement(text)
  if statement is None:
    return None
  statement = statement.strip().rstrip(".").strip()
  if len(statement) >= 2 and statement[0] == "$" and statement[-1] == "$":
    statement = statement.strip("$").strip()
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
