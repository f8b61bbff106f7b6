"""A bounded LaTeX / plain-math parser and equivalence check for MATH answers.

Model text is untrusted, so nothing here evaluates a string: the tokenizer and
a recursive-descent parser build expression trees directly, and the trees are
evaluated by this module's own arithmetic (no eval/exec, no symbolic-math
library). Every step is bounded:

* answers over ``MAX_ANSWER_CHARS`` characters are refused unread, numerals
  over ``MAX_DIGITS`` digits, trees over ``MAX_NODES`` nodes or
  ``MAX_DEPTH`` levels are unparsable;
* exact arithmetic is on ``fractions.Fraction`` whose numerator and
  denominator stay under ``MAX_BITS`` bits: a power, root, factorial or
  binomial is sized *before* it is computed (``9**9**9`` and
  ``10^{10^{10^{10}}}`` are refused, never built);
* numeric evaluation is complex floating point with overflow and domain
  errors caught, and every comparison runs under a ``TIME_BUDGET_S`` deadline
  (thread CPU time) and a node budget.

Trees are tuples: ``("num", Fraction)``, ``("sym", name)``, ``("const",
"pi" | "i" | "inf")``, ``("add", (a, b, ...))``, ``("mul", (a, b, ...))``,
``("neg", a)``, ``("div", a, b)``, ``("pow", a, b)``, ``("fact", a)``,
``("binom", n, k)``, ``("func", name, a)``, ``("abs", a)`` and ``("pm", a, b)``
(``a ± b``; ``a`` None for a leading ``±``).
"""

from __future__ import annotations

import fractions
import re
import time

from alphallm.latex_normalize import MAX_ANSWER_CHARS, MAX_DEPTH

Fraction = fractions.Fraction
Tree = tuple

# Most digits of one numeral.
MAX_DIGITS = 40
# Most tokens of an answer and most nodes of its trees (all of them together).
MAX_TOKENS = 256
MAX_NODES = 256
# Largest numerator / denominator, in bits, of any exact intermediate value.
MAX_BITS = 4096
# Largest n of an exact factorial / binomial, and largest root index.
MAX_FACTORIAL = 300
MAX_ROOT_INDEX = 64
# Wall-clock budget of one parse or comparison.
TIME_BUDGET_S = 0.025


class Unparsable(Exception):
  """Raised inside this module on input it will not read; never escapes it."""


class Budget:
  """A deadline and a node counter shared by one comparison.

  The deadline is on this thread's CPU time (``time.thread_time``), so that a
  busy machine (other processes, a framework's background threads) does not
  turn a correct comparison into a timeout; the node counter bounds the work
  on its own.
  """

  def __init__(self, seconds: float = TIME_BUDGET_S):
    self.deadline = time.thread_time() + seconds
    self.nodes = 0

  def tick(self, nodes: int = 0) -> None:
    self.nodes += nodes
    if self.nodes > MAX_NODES * 64 or time.thread_time() > self.deadline:
      raise Unparsable("budget")


# --- Tokens. ---

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"|(?P<cmd>\\(?:[A-Za-z]+|[{}|]))"
    r"|(?P<word>(?:sqrt|pi|sin|cos|tan|log|ln|exp)(?![A-Za-z]))"
    r"|(?P<text>[A-Za-z]{4,})"
    r"|(?P<sym>[A-Za-z](?:_(?:\{[A-Za-z0-9]{1,8}\}|[A-Za-z0-9]))?)"
    r"|(?P<op>\*\*|[-+*/^!()\[\]{},=|%_]))", re.ASCII)
_REPEAT_RE = re.compile(r"\\overline\s*(?:\{([0-9]{1,12})\}|([0-9]))|\(([0-9]{1,12})\)", re.ASCII)
_CMD_ALIASES = {"\\cdot": "*", "\\times": "*", "\\ast": "*", "\\div": "/", "\\mp": "\\pm",
                "\\lbrace": "\\{", "\\rbrace": "\\}", "\\vert": "|", "\\lvert": "|",
                "\\rvert": "|", "\\leq": "\\le", "\\geq": "\\ge", "\\dbinom": "\\binom"}
_GREEK = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi "
    "rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Phi Psi "
    "Omega".split())
_FUNCS = frozenset("sin cos tan sec csc cot arcsin arccos arctan sinh cosh tanh log ln exp".split())


def _decimal(text: str) -> Fraction:
  """The exact value of ``12``, ``1.50``, ``3.`` or ``.5``."""
  whole, _, frac = text.partition(".")
  if len(whole) + len(frac) > MAX_DIGITS:
    raise Unparsable("numeral too long")
  return Fraction(int(whole or "0") * 10**len(frac) + int(frac or "0"), 10**len(frac))


def _repeating(text: str, period: str) -> Fraction:
  """``0.1`` with period ``6`` -> 1/6: ``text`` then ``period`` repeated forever."""
  head = _decimal(text)
  places = len(text.partition(".")[2])
  if places + len(period) > MAX_DIGITS:
    raise Unparsable("numeral too long")
  return head + Fraction(int(period), (10**len(period) - 1) * 10**places)


def tokenize(s: str) -> tuple[list[tuple[str, object]], list[str]]:
  """``([(kind, value)], [text])``: kind ``num`` (a Fraction), ``sym``, ``cmd`` or ``op``.

  ``0.\\overline{6}`` and ``0.(6)`` are one repeating-decimal ``num``; ``text``
  is each token's source text.

  Raises:
    Unparsable: on a character outside the grammar or over ``MAX_TOKENS``.
  """
  tokens: list[tuple[str, object]] = []
  texts: list[str] = []
  pos, end = 0, len(s.rstrip())
  while pos < end:
    m = _TOKEN_RE.match(s, pos, end)
    if m is None or len(tokens) >= MAX_TOKENS:
      raise Unparsable(f"unexpected {s[pos:pos + 8]!r}")
    pos = m.end()
    texts.append(m.group().strip())
    if m.group("num") is not None:
      text = m.group("num")
      rep = _REPEAT_RE.match(s, pos) if "." in text else None
      if rep is not None:
        tokens.append(("num", _repeating(text, next(g for g in rep.groups() if g))))
        pos = rep.end()
      else:
        tokens.append(("num", _decimal(text)))
    elif m.group("cmd") is not None or m.group("word") is not None:
      # Plain-text "sqrt(2)" and "pi" read as the LaTeX commands.
      cmd = m.group("cmd") or "\\" + m.group("word")
      cmd = _CMD_ALIASES.get(cmd, cmd)
      tokens.append(("op", cmd) if cmd in ("*", "/", "|") else ("cmd", cmd))
    elif m.group("text") is not None:
      # A run of 4+ letters is a word ("Evelyn"), one symbol: not a product of its letters.
      tokens.append(("sym", "text:" + m.group("text")))
    elif m.group("sym") is not None:
      tokens.append(("sym", m.group("sym").replace("{", "").replace("}", "")))
    else:
      op = m.group("op")
      tokens.append(("op", "^" if op == "**" else op))
  return tokens, texts


# --- Expression parser. ---

_CLOSERS = {"(": ")", "[": "]", "{": "}"}


class _Parser:
  """Recursive descent over tokens, bounded in depth and node count.

  ``expr := [sign] term (('+' | '-' | '\\pm') term)*``;
  ``term := unary (('*' | '/') unary | implicit-product unary)*``;
  ``unary := ('-' | '+' | '\\pm') unary | power``;
  ``power := postfix ('^' exponent)?`` (right-associative);
  ``postfix := atom ('!' | '%')*``.
  """

  def __init__(self, tokens: list[tuple[str, object]], texts: list[str]):
    self.tokens, self.texts = list(tokens), list(texts)
    self.pos, self.depth, self.nodes = 0, 0, 0

  def node(self, *parts) -> Tree:
    self.nodes += 1
    if self.nodes > MAX_NODES:
      raise Unparsable("too many nodes")
    return tuple(parts)

  def peek(self, offset: int = 0) -> tuple[str, object] | None:
    i = self.pos + offset
    return self.tokens[i] if i < len(self.tokens) else None

  def take(self, kind: str, value: object) -> bool:
    if self.peek() == (kind, value):
      self.pos += 1
      return True
    return False

  def expect(self, kind: str, value: object) -> None:
    if not self.take(kind, value):
      raise Unparsable(f"expected {value!r}")

  def enter(self) -> None:
    self.depth += 1
    if self.depth > MAX_DEPTH:
      raise Unparsable("too deep")

  def expr(self) -> Tree:
    self.enter()
    terms = [self.term()]
    while True:
      tok = self.peek()
      if tok in (("op", "+"), ("op", "-"), ("cmd", "\\pm")):
        self.pos += 1
        rhs = self.term()
        if tok == ("cmd", "\\pm"):
          terms = [self.node("pm", self.sum(terms), rhs)]
        else:
          terms.append(rhs if tok[1] == "+" else self.node("neg", rhs))
      else:
        break
    self.depth -= 1
    return self.sum(terms)

  def sum(self, terms: list[Tree]) -> Tree:
    return terms[0] if len(terms) == 1 else self.node("add", tuple(terms))

  def term(self) -> Tree:
    factors = [self.unary()]
    while True:
      tok = self.peek()
      if tok in (("op", "*"), ("op", "/")):
        self.pos += 1
        rhs = self.unary()
        if tok[1] == "*":
          factors.append(rhs)
        else:
          factors = [self.node("div", self.product(factors), rhs)]
      elif self.starts_implicit_factor(factors[-1]):
        mixed = self.mixed_fraction(factors)
        if mixed is None:
          factors.append(self.power())
        else:
          factors[-1] = mixed
      else:
        break
    return self.product(factors)

  def product(self, factors: list[Tree]) -> Tree:
    return factors[0] if len(factors) == 1 else self.node("mul", tuple(factors))

  def starts_implicit_factor(self, previous: Tree) -> bool:
    """Does the next token start a factor multiplied without a sign (``2x``, ``2\\sqrt3``)?"""
    tok = self.peek()
    if tok is None:
      return False
    kind, value = tok
    if kind == "sym" or (kind == "op" and value in ("(", "[", "{")):
      return True
    if kind == "num":
      return previous[0] != "num"  # "x2" reads x*2; two numerals in a row are not a product.
    return kind == "cmd" and value not in ("\\pm", "\\cup", "\\le", "\\ge", "\\}", "\\right")

  def mixed_fraction(self, factors: list[Tree]) -> Tree | None:
    """``2\\frac{1}{2}`` is 2 + 1/2 when a whole number meets a proper numeric fraction."""
    last = factors[-1]
    negative = last[0] == "neg"
    whole = last[1] if negative else last
    if len(factors) != 1 or whole[0] != "num" or whole[1].denominator != 1 or whole[1] < 1:
      return None
    save = self.pos
    if self.take("cmd", "\\frac"):
      num, den = self.argument(), self.argument()
      if (num[0] == den[0] == "num" and num[1].denominator == den[1].denominator == 1
          and 0 < num[1] < den[1]):
        value = self.node("num", whole[1] + num[1] / den[1])
        return self.node("neg", value) if negative else value
    self.pos = save
    return None

  def unary(self) -> Tree:
    self.enter()
    tok = self.peek()
    if tok in (("op", "-"), ("op", "+"), ("cmd", "\\pm")):
      self.pos += 1
      inner = self.unary()
      result = inner if tok[1] == "+" else (
          self.node("neg", inner) if tok[1] == "-" else self.node("pm", None, inner))
    else:
      result = self.power()
    self.depth -= 1
    return result

  def power(self) -> Tree:
    base = self.postfix()
    if not self.take("op", "^"):
      return base
    self.enter()
    if self.take("op", "{"):
      exponent = self.group("}")
    elif self.peek() in (("op", "-"), ("op", "+")):
      exponent = self.unary()
    else:
      exponent = self.power()
    self.depth -= 1
    return self.node("pow", base, exponent)

  def postfix(self) -> Tree:
    value = self.atom()
    while True:
      if self.take("op", "!"):
        value = self.node("fact", value)
      elif self.take("op", "%"):
        value = self.node("div", value, self.node("num", Fraction(100)))
      else:
        return value

  def group(self, close: str) -> Tree:
    """The rest of a bracketed group whose opening token was consumed."""
    value = self.expr()
    self.expect("op", close)
    return value

  def argument(self) -> Tree:
    """A command argument: a brace group, or one token (``\\frac12``, ``\\sqrt x``)."""
    if self.take("op", "{"):
      return self.group("}")
    tok = self.peek()
    text = self.texts[self.pos] if tok is not None else ""
    if tok is not None and tok[0] == "num" and len(text) > 1 and text.isdigit():
      # "\frac12": a digit run gives its first digit; the rest stays a numeral.
      self.tokens[self.pos] = ("num", Fraction(int(text[1:])))
      self.texts[self.pos] = text[1:]
      return self.node("num", Fraction(int(text[0])))
    return self.atom()

  def atom(self) -> Tree:
    tok = self.peek()
    if tok is None:
      raise Unparsable("unexpected end")
    self.pos += 1
    kind, value = tok
    if kind == "num":
      return self.node("num", value)
    if kind == "sym":
      if self.take("op", "_"):
        sub = self.peek()
        if sub is None or sub[0] not in ("num", "sym"):
          raise Unparsable("bad subscript")
        self.pos += 1
        return self.node("sym", f"{value}_{sub[1]}")
      return self.node("const", "i") if value == "i" else self.node("sym", value)
    if kind == "op" and value in _CLOSERS:
      self.enter()
      inner = self.group(_CLOSERS[value])
      self.depth -= 1
      return inner
    if kind == "op" and value == "|":
      self.enter()
      inner = self.group("|")
      self.depth -= 1
      return self.node("abs", inner)
    if kind == "cmd":
      return self.command(value)
    raise Unparsable(f"unexpected {value!r}")

  def command(self, cmd: str) -> Tree:
    name = cmd[1:]
    if cmd == "\\frac":
      return self.node("div", self.argument(), self.argument())
    if cmd == "\\binom":
      return self.node("binom", self.argument(), self.argument())
    if cmd == "\\sqrt":
      index = Fraction(2)
      if self.take("op", "["):
        root = self.group("]")
        if root[0] != "num" or root[1].denominator != 1 or not 2 <= root[1] <= MAX_ROOT_INDEX:
          raise Unparsable("bad root index")
        index = root[1]
      return self.node("pow", self.argument(), self.node("num", 1 / index))
    if cmd == "\\pi":
      return self.node("const", "pi")
    if cmd == "\\infty":
      return self.node("const", "inf")
    if name in _GREEK:
      return self.node("sym", name)
    if name in _FUNCS:
      return self.function(name)
    raise Unparsable(f"unknown command {cmd}")

  def function(self, name: str) -> Tree:
    """``\\sin x``, ``\\log_2 8``, ``\\sin^2 x`` and ``\\ln(x+1)``."""
    base = None
    if name == "log" and self.take("op", "_"):
      base = self.argument()
    power = None
    if self.take("op", "^"):
      power = self.argument()
    arg = self.power()
    if arg[0] in ("num", "sym"):
      # "\sin 2x" is sin(2x): a bare argument runs over the numerals and letters after it.
      factors = [arg]
      while self.peek() is not None and self.peek()[0] == "sym":
        factors.append(self.power())
      arg = self.product(factors)
    value = self.node("func", name, arg)
    if base is not None:
      value = self.node("div", value, self.node("func", "ln", base))
    return value if power is None else self.node("pow", value, power)


def parse_expression(tokens: list[tuple[str, object]], texts: list[str]) -> Tree:
  """The tree of a whole token list.

  Raises:
    Unparsable: if the tokens are not one expression of the grammar.
  """
  if not tokens:
    raise Unparsable("empty")
  parser = _Parser(tokens, texts)
  tree = parser.expr()
  if parser.pos != len(tokens):
    raise Unparsable(f"unexpected {tokens[parser.pos][1]!r}")
  return tree


# --- Answers: expressions, equations, tuples, intervals and sets. ---
#
# An answer is ``("expr", tree)``, ``("eq", lhs, rhs)``, ``("tuple", open,
# close, items)`` (ordered pairs and intervals: ``(1,2]`` has open "(" and
# close "]") or ``("set", items)`` (``\{1, 2\}``, a bare list ``1, 2``, a
# union of intervals), items being answers.

_OPENERS = (("op", "("), ("op", "["), ("op", "{"), ("cmd", "\\{"))
_CLOSES = (("op", ")"), ("op", "]"), ("op", "}"), ("cmd", "\\}"))
MAX_ELEMENTS = 32


def _split_top(tokens: list, texts: list, sep: tuple[str, str]) -> list[tuple[list, list]]:
  """``(tokens, texts)`` pieces between top-level ``sep`` tokens (brackets may mismatch)."""
  pieces, depth, start = [], 0, 0
  for i, tok in enumerate(tokens):
    if tok in _OPENERS:
      depth += 1
    elif tok in _CLOSES:
      depth -= 1
    elif tok == sep and depth == 0:
      pieces.append((tokens[start:i], texts[start:i]))
      start = i + 1
  pieces.append((tokens[start:], texts[start:]))
  if len(pieces) > MAX_ELEMENTS:
    raise Unparsable("too many elements")
  return pieces


def _encloses(tokens: list) -> bool:
  """Do the first and last tokens bracket the whole list (depth 0 only at the end)?"""
  depth = 0
  for i, tok in enumerate(tokens):
    if tok in _OPENERS:
      depth += 1
    elif tok in _CLOSES:
      depth -= 1
      if depth == 0 and i != len(tokens) - 1:
        return False
  return depth == 0


def _parse_list(tokens: list, texts: list, depth: int) -> list:
  """The answers of a comma-separated list."""
  return [_parse_element(t, x, depth + 1) for t, x in _split_top(tokens, texts, ("op", ","))]


def _parse_element(tokens: list, texts: list, depth: int):
  """One list element: a union, a bracketed tuple / interval / set, or a relation."""
  if depth > 8:
    raise Unparsable("too deep")
  union = _split_top(tokens, texts, ("cmd", "\\cup"))
  if len(union) > 1:
    return ("set", tuple(_parse_element(t, x, depth + 1) for t, x in union))
  if len(tokens) >= 2 and _encloses(tokens):
    first, last = tokens[0], tokens[-1]
    inner, inner_texts = tokens[1:-1], texts[1:-1]
    if first == ("cmd", "\\{") and last == ("cmd", "\\}"):
      return ("set", tuple(_parse_list(inner, inner_texts, depth)) if inner else ())
    if first in (("op", "("), ("op", "[")) and last in (("op", ")"), ("op", "]")):
      items = _parse_list(inner, inner_texts, depth)
      if len(items) > 1:
        return ("tuple", first[1], last[1], tuple(items))
  sides = _split_top(tokens, texts, ("op", "="))
  if len(sides) == 2:
    return ("eq", parse_expression(*sides[0]), parse_expression(*sides[1]))
  if len(sides) > 2:
    raise Unparsable("chained equation")
  return ("expr", parse_expression(tokens, texts))


def parse_answer(s: object):
  """The answer tree of a cleaned answer string (see ``latex_normalize.clean_answer``).

  Returns:
    An answer (see above), or None if ``s`` is not a string, is over
    ``MAX_ANSWER_CHARS`` or is outside the grammar.
  """
  if not isinstance(s, str) or not s.strip() or len(s) > MAX_ANSWER_CHARS:
    return None
  try:
    tokens, texts = tokenize(s)
    items = _parse_list(tokens, texts, 0)
  except (Unparsable, RecursionError):
    return None
  return items[0] if len(items) == 1 else ("set", tuple(items))
