"""Equivalence of MATH answers on the trees of ``latex_math``, bounded.

Two answers are equivalent when their trees denote the same mathematical
object (``answers_equivalent``):

* scalars: equal exact rational values when both evaluate exactly
  (``exact_value``); otherwise equal complex values, within a relative
  tolerance, at the same ``NUM_POINTS`` seeded random points for their free
  variables (``numeric_value``); ``\\infty`` only equals an infinity of the
  same sign;
* ``x = 5`` equals ``5`` (a single variable on one side), and two equations
  are equivalent when their differences ``lhs - rhs`` are proportional;
* tuples and intervals elementwise with the same brackets, sets and bare
  lists as multisets, ``a \\pm b`` as the set ``{a + b, a - b}``;
* ``50\\%`` equals both ``50`` and ``0.5``; a choice ``(C)`` equals ``C``.

No string is ever evaluated: trees are walked by this module's arithmetic.
Exact values stay under ``latex_math.MAX_BITS`` bits (powers, roots and
factorials are sized before they are computed), numeric values are complex
floats with overflow caught, and a whole comparison runs under
``latex_math.TIME_BUDGET_S``; anything over a bound is "not equivalent".
"""

from __future__ import annotations

import cmath
import fractions
import math
import random
import re

from alphallm import latex_math
from alphallm.latex_math import MAX_BITS, MAX_FACTORIAL, Unparsable
from alphallm.latex_normalize import clean_answer

Fraction = fractions.Fraction

# Random points at which expressions with free variables are compared.
NUM_POINTS = 6
# Relative tolerances: constants only, and expressions with variables.
REL_TOL_CONST = 1e-11
REL_TOL_VARS = 1e-8
# Numeric values beyond this magnitude are refused (kept far from overflow).
MAX_FLOAT = 1e250
# Largest integer exponent computed by repeated multiplication.
MAX_INT_EXPONENT = 4096
_LOG_MAX_FLOAT = math.log(MAX_FLOAT)
_CHOICE_RE = re.compile(r"\(?([A-E])\)?")


def _bits(value: Fraction) -> int:
  return max(value.numerator.bit_length(), value.denominator.bit_length())


class _TooLarge(ArithmeticError):
  """An exact value over ``MAX_BITS`` bits: the value is treated as unknown."""


def _bounded(value: Fraction) -> Fraction:
  if _bits(value) > MAX_BITS:
    raise _TooLarge("value too large")
  return value


def _iroot(n: int, q: int) -> int | None:
  """The integer ``q``-th root of ``n >= 0`` if ``n`` is a perfect power, else None."""
  if n < 2:
    return n
  x = 1 << -(-n.bit_length() // q)
  while True:
    y = ((q - 1) * x + n // x**(q - 1)) // q
    if y >= x:
      break
    x = y
  return x if x**q == n else None


def _exact_pow(base: Fraction, exponent: Fraction) -> Fraction | None:
  """``base ** exponent`` when rational, sized before it is computed; else None."""
  p, q = exponent.numerator, exponent.denominator
  if base in (0, 1):
    return None if base == 0 and p <= 0 else base
  if base == -1 and q == 1:
    return Fraction(-1 if p % 2 else 1)
  if q > latex_math.MAX_ROOT_INDEX or abs(p) > MAX_INT_EXPONENT:
    return None
  if q > 1:
    if base < 0 and q % 2 == 0:
      return None
    num, den = _iroot(abs(base.numerator), q), _iroot(base.denominator, q)
    if num is None or den is None:
      return None
    base = Fraction(num if base > 0 else -num, den)
  if abs(p) * math.log2(max(abs(base.numerator), base.denominator)) > MAX_BITS:
    raise _TooLarge("power too large")
  return base**p


def exact_value(tree, budget) -> Fraction | None:
  """The exact rational value of ``tree``, or None when it is not a known rational.

  None also when an intermediate value would exceed ``MAX_BITS`` bits.

  Raises:
    Unparsable: when the budget runs out.
  """
  try:
    return _exact(tree, budget)
  except _TooLarge:
    return None


def _exact(tree, budget) -> Fraction | None:
  budget.tick(1)
  kind = tree[0]
  if kind == "num":
    return tree[1]
  if kind in ("sym", "const", "func", "pm"):
    return None
  if kind in ("add", "mul"):
    values = [_exact(t, budget) for t in tree[1]]
    if None in values:
      return None
    total = Fraction(0 if kind == "add" else 1)
    for v in values:
      if kind == "mul" and _bits(total) + _bits(v) > MAX_BITS:
        raise _TooLarge("product too large")
      total = _bounded(total + v if kind == "add" else total * v)
    return total
  args = [_exact(t, budget) for t in tree[1:]]
  if None in args:
    return None
  return _exact_op(kind, args)


def _exact_op(kind: str, args: list[Fraction]) -> Fraction | None:
  """One exact operation on known rationals (``neg``, ``div``, ``pow``, ...)."""
  if kind == "neg":
    return -args[0]
  if kind == "abs":
    return abs(args[0])
  if kind == "div":
    return None if args[1] == 0 else _bounded(args[0] / args[1])
  if kind == "pow":
    return _exact_pow(*args)
  if kind == "fact":
    n = args[0]
    if n.denominator != 1 or not 0 <= n <= MAX_FACTORIAL:
      return None
    return Fraction(math.factorial(int(n)))
  if kind == "binom":
    n, k = args
    if n.denominator != 1 or k.denominator != 1 or not 0 <= n <= MAX_BITS:
      return None
    return Fraction(math.comb(int(n), int(k))) if k >= 0 else Fraction(0)
  raise Unparsable(f"unknown node {kind}")


# --- Numeric evaluation. ---

_FUNCS = {
    "sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "sinh": cmath.sinh,
    "cosh": cmath.cosh, "tanh": cmath.tanh, "arcsin": cmath.asin, "arccos": cmath.acos,
    "arctan": cmath.atan, "log": cmath.log, "ln": cmath.log,
    "sec": lambda z: 1 / cmath.cos(z), "csc": lambda z: 1 / cmath.sin(z),
    "cot": lambda z: 1 / cmath.tan(z), "exp": cmath.exp,
}


def _checked(z: complex) -> complex:
  if not (cmath.isfinite(z) and abs(z) <= MAX_FLOAT):
    raise ArithmeticError("out of range")
  return z


def _numeric_pow(base: complex, exp_tree, env: dict, budget) -> complex:
  """``base ** exponent``; real odd roots of negative reals are real (``\\sqrt[3]{-8} = -2``)."""
  exact = exact_value(exp_tree, budget)
  if exact is not None:
    p, q = exact.numerator, exact.denominator
    if base == 0:
      if exact <= 0:
        raise ArithmeticError("0 to a non-positive power")
      return 0j
    if abs(exact) * abs(math.log(abs(base))) > _LOG_MAX_FLOAT:
      raise ArithmeticError("power too large")
    if q == 1:
      return _checked(base**p)
    if base.imag == 0 and base.real < 0 and q % 2 == 1:
      return _checked(complex((-1)**p * (-base.real)**(p / q)))
  exponent = numeric_value(exp_tree, env, budget)
  if base == 0:
    if exponent.real <= 0:
      raise ArithmeticError("0 to a non-positive power")
    return 0j
  w = exponent * cmath.log(base)
  if w.real > _LOG_MAX_FLOAT:
    raise ArithmeticError("power too large")
  return _checked(cmath.exp(w))


def _integer(z: complex, limit: int) -> int:
  """``z`` as an integer in ``[0, limit]``, or ArithmeticError."""
  n = round(z.real)
  if z.imag != 0 or abs(z.real - n) > 1e-9 or not 0 <= n <= limit:
    raise ArithmeticError("not a small integer")
  return n


def numeric_value(tree, env: dict, budget) -> complex:
  """The complex value of ``tree`` with the variables of ``env`` substituted.

  Raises:
    ArithmeticError: undefined here (division by zero, overflow, a free
      variable not in ``env``, an infinity); Unparsable: out of budget.
  """
  budget.tick(1)
  kind = tree[0]
  if kind == "num":
    return _checked(complex(float(tree[1])))
  if kind == "sym":
    if tree[1] not in env:
      raise ArithmeticError("free variable")
    return env[tree[1]]
  if kind == "const":
    if tree[1] == "inf":
      raise ArithmeticError("infinity")
    return complex(math.pi) if tree[1] == "pi" else 1j
  if kind in ("add", "mul"):
    total = 0j if kind == "add" else 1 + 0j
    for t in tree[1]:
      v = numeric_value(t, env, budget)
      total = _checked(total + v if kind == "add" else total * v)
    return total
  if kind == "pow":
    return _numeric_pow(numeric_value(tree[1], env, budget), tree[2], env, budget)
  if kind == "func":
    return _checked(_FUNCS[tree[1]](numeric_value(tree[2], env, budget)))
  if kind == "pm":
    raise ArithmeticError("unexpanded plus-minus")
  args = [numeric_value(t, env, budget) for t in tree[1:]]
  if kind == "neg":
    return -args[0]
  if kind == "abs":
    return complex(abs(args[0]))
  if kind == "div":
    return _checked(args[0] / args[1])
  if kind == "fact":
    return _checked(complex(math.factorial(_integer(args[0], 170))))
  if kind == "binom":
    n = _integer(args[0], 1000)
    return _checked(complex(math.comb(n, _integer(args[1], n))))
  raise ArithmeticError(f"no numeric value for {kind}")


# --- Comparison. ---

_ERRORS = (ArithmeticError, ValueError)


def _walk(tree):
  """Every node of an expression tree, depth first."""
  stack = [tree]
  while stack:
    node = stack.pop()
    yield node
    if node[0] in ("add", "mul"):
      stack.extend(node[1])
    elif node[0] == "func":
      stack.append(node[2])
    elif node[0] not in ("num", "sym", "const"):
      stack.extend(t for t in node[1:] if t is not None)


def _symbols(tree) -> set[str]:
  return {n[1] for n in _walk(tree) if n[0] == "sym"}


def _infinity_sign(tree) -> int | None:
  """+1 for ``\\infty`` / ``+\\infty``, -1 for ``-\\infty``, None otherwise."""
  if tree == ("const", "inf"):
    return 1
  if tree[0] == "neg":
    inner = _infinity_sign(tree[1])
    return None if inner is None else -inner
  return None


def _points(names: set[str]) -> list[dict]:
  """``NUM_POINTS`` seeded assignments of real values in ``[-3, -0.3] U [0.3, 3]``."""
  rng = random.Random(20261202)
  return [{n: complex(rng.choice((-1, 1)) * rng.uniform(0.3, 3.0)) for n in sorted(names)}
          for _ in range(NUM_POINTS)]


def _close(u: complex, v: complex, tol: float) -> bool:
  return abs(u - v) <= tol * max(1.0, abs(u), abs(v))


def _try_numeric(tree, env: dict, budget) -> complex | None:
  try:
    return numeric_value(tree, env, budget)
  except _ERRORS:
    return None


def scalars_equal(a, b, budget) -> bool:
  """Do expression trees ``a`` and ``b`` have the same value (for all variables)?"""
  if any(n == ("const", "inf") for t in (a, b) for n in _walk(t)):
    sign = _infinity_sign(a)
    return sign is not None and sign == _infinity_sign(b)
  ea, eb = exact_value(a, budget), exact_value(b, budget)
  if ea is not None and eb is not None:
    return ea == eb
  names = _symbols(a) | _symbols(b)
  tol = REL_TOL_VARS if names else REL_TOL_CONST
  compared = 0
  for env in (_points(names) if names else [{}]):
    va, vb = _try_numeric(a, env, budget), _try_numeric(b, env, budget)
    if va is None and vb is None:
      continue
    if va is None or vb is None or not _close(va, vb, tol):
      return False
    compared += 1
  return compared >= (NUM_POINTS // 2 if names else 1)


def _difference(eq):
  return ("add", (eq[1], ("neg", eq[2])))


def equations_equal(a, b, budget) -> bool:
  """Are ``lhs - rhs`` of equations ``a`` and ``b`` proportional (the same equation)?"""
  da, db = _difference(a), _difference(b)
  names = _symbols(da) | _symbols(db)
  if not names:
    return False
  ratio, compared = None, 0
  for env in _points(names):
    va, vb = _try_numeric(da, env, budget), _try_numeric(db, env, budget)
    if va is None or vb is None:
      if (va is None) != (vb is None):
        return False
      continue
    if ratio is None and abs(va) > 1e-9 and abs(vb) > 1e-9:
      ratio = va / vb
    if ratio is None or not _close(va, ratio * vb, REL_TOL_VARS):
      return False
    compared += 1
  return compared >= NUM_POINTS // 2


def _solved_value(eq):
  """``5`` of ``x = 5`` or ``5 = x``: a lone variable not on the other side; else None."""
  for var, value in ((eq[1], eq[2]), (eq[2], eq[1])):
    if var[0] == "sym" and var[1] not in _symbols(value):
      return value
  return None


def _sets_equal(a: tuple, b: tuple, budget, depth: int) -> bool:
  """Multiset equality under ``_equal``: a perfect matching (Kuhn's algorithm)."""
  if len(a) != len(b):
    return False
  cache: dict = {}

  def edge(i, j):
    if (i, j) not in cache:
      cache[i, j] = _equal(a[i], b[j], budget, depth + 1)
    return cache[i, j]

  match: dict[int, int] = {}

  def augment(i, seen):
    for j in range(len(b)):
      if j not in seen and edge(i, j):
        seen.add(j)
        if j not in match or augment(match[j], seen):
          match[j] = i
          return True
    return False

  return all(augment(i, set()) for i in range(len(a)))


def _equal(a, b, budget, depth: int = 0) -> bool:
  """Are answers ``a`` and ``b`` (see ``latex_math.parse_answer``) equivalent?"""
  if depth > 8:
    raise Unparsable("too deep")
  ka, kb = a[0], b[0]
  if ka == kb == "expr":
    return scalars_equal(a[1], b[1], budget)
  if ka == kb == "eq":
    return equations_equal(a, b, budget)
  if {ka, kb} == {"eq", "expr"}:
    eq, other = (a, b) if ka == "eq" else (b, a)
    value = _solved_value(eq)
    return value is not None and scalars_equal(value, other[1], budget)
  if ka == kb == "tuple":
    return (a[1:3] == b[1:3] and len(a[3]) == len(b[3])
            and all(_equal(x, y, budget, depth + 1) for x, y in zip(a[3], b[3])))
  if ka == kb == "set":
    return _sets_equal(a[1], b[1], budget, depth)
  return False


# --- Plus-minus expansion. ---

MAX_PLUS_MINUS = 3


def _expand_tree(tree, signs: list[int]):
  """``tree`` with each ``pm`` node, in preorder, replaced by ``+`` or ``-`` from ``signs``."""
  kind = tree[0]
  if kind == "pm":
    sign = signs.pop(0)
    a = None if tree[1] is None else _expand_tree(tree[1], signs)
    b = _expand_tree(tree[2], signs)
    b = b if sign > 0 else ("neg", b)
    return b if a is None else ("add", (a, b))
  if kind in ("add", "mul"):
    return (kind, tuple(_expand_tree(t, signs) for t in tree[1]))
  if kind == "func":
    return (kind, tree[1], _expand_tree(tree[2], signs))
  if kind in ("num", "sym", "const"):
    return tree
  return (kind,) + tuple(_expand_tree(t, signs) for t in tree[1:])


def _expansions(tree) -> list:
  """Every sign choice of the ``\\pm`` in ``tree`` (one tree when there is none)."""
  count = sum(n[0] == "pm" for n in _walk(tree))
  if count > MAX_PLUS_MINUS:
    raise Unparsable("too many plus-minus signs")
  return [_expand_tree(tree, [-1 if (k >> i) & 1 else 1 for i in range(count)])
          for k in range(2**count)]


def _alternatives(answer) -> list:
  """The answers ``answer`` stands for: two for ``1 \\pm \\sqrt2``, else itself."""
  kind = answer[0]
  if kind == "expr":
    return [("expr", t) for t in _expansions(answer[1])]
  if kind == "eq":
    return [("eq", answer[1], t) for t in _expansions(answer[2])]
  if kind == "tuple":
    return [answer[:3] + (tuple(expand_answer(x) for x in answer[3]),)]
  return [("set", tuple(alt for item in answer[1] for alt in _alternatives(item)))]


def expand_answer(answer):
  """``answer`` with every ``a \\pm b`` turned into the set ``{a + b, a - b}``.

  Inside a set or list the two values join the set (``1 \\pm 2, 5`` is
  ``{3, -1, 5}``).
  """
  alternatives = _alternatives(answer)
  return alternatives[0] if len(alternatives) == 1 else ("set", tuple(alternatives))


# --- Entry point. ---


def _variants(cleaned: str) -> list[str]:
  """A percentage reads both as a fraction of 100 and as the bare number."""
  return [cleaned, cleaned.replace("%", "")] if "%" in cleaned else [cleaned]


def _choice(cleaned: str) -> str | None:
  m = _CHOICE_RE.fullmatch(cleaned.strip())
  return None if m is None else m.group(1)


def answers_equivalent(a: object, b: object) -> bool | None:
  """Are MATH answers ``a`` and ``b`` equivalent (see the module docstring)?

  Args:
    a, b: untrusted answer texts (e.g. boxed contents), at most
      ``MAX_ANSWER_CHARS`` characters each.

  Returns:
    True or False when both answers parse; None when either is not a string,
    is too long or is outside the grammar (the caller may then compare
    normalised strings). Over a bound (size, depth, value, time): False.
  """
  ca, cb = clean_answer(a), clean_answer(b)
  if not ca or not cb:
    return None
  choice_a, choice_b = _choice(ca), _choice(cb)
  if choice_a and choice_b:
    return choice_a == choice_b
  parsed_a = [t for t in map(latex_math.parse_answer, _variants(ca)) if t is not None]
  parsed_b = [t for t in map(latex_math.parse_answer, _variants(cb)) if t is not None]
  if not parsed_a or not parsed_b:
    return None
  budget = latex_math.Budget()
  try:
    return any(_equal(expand_answer(x), expand_answer(y), budget)
               for x in parsed_a for y in parsed_b)
  except (Unparsable, RecursionError, *_ERRORS):
    return False


def exact_answer_value(a: object) -> Fraction | None:
  """The exact rational value of a one-number answer (``10^{5}``, ``0.\\overline{3}``), or None."""
  parsed = latex_math.parse_answer(clean_answer(a))
  if parsed is None or parsed[0] != "expr":
    return None
  try:
    return exact_value(parsed[1], latex_math.Budget())
  except (Unparsable, RecursionError, *_ERRORS):
    return None
