"""Bounded text handling of LaTeX answers: brace groups, boxes, normal forms.

The lowest layer of the graders (``graders`` and ``latex_math`` build on it).
Everything here is a pure string function, total on any ``str`` and bounded:
brace matching stops at ``MAX_DEPTH`` levels and ``MAX_ANSWER_CHARS``
characters, and answers over ``MAX_ANSWER_CHARS`` are refused unread.

* ``brace_content`` / ``box_at`` / ``unwrap_box``: balanced ``{...}`` groups
  and ``\\boxed{...}`` / ``\\fbox{...}`` contents;
* ``clean_answer``: a MATH answer without its presentation (boxes, ``$``,
  ``\\left``/``\\right``, spacing commands, degree signs, ``\\text{}`` units
  and wrappers, thousands separators, ``x \\in``; ``3 and 4`` becomes
  ``3, 4``), spaces kept, for the expression parser;
* ``normalize_math_answer``: the string normal form used for canonical
  answers and as the fallback comparison.
"""

from __future__ import annotations

import re

# Answers (a boxed content, an answer line) longer than this are refused.
MAX_ANSWER_CHARS = 512
# Deepest nesting of braces or parentheses the parsers follow.
MAX_DEPTH = 32

BOX_COMMANDS = ("\\boxed", "\\fbox")
THOUSANDS_RE = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?", re.ASCII)
_SPACED_THOUSANDS_RE = re.compile(r"-?[0-9]{1,3}(?: [0-9]{3})+(?:\.[0-9]+)?", re.ASCII)
_BARE_BOX_RE = re.compile(r" {1,4}([^\s$]{1,64})")


def brace_content(text: str, open_pos: int) -> tuple[str, int] | None:
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


def box_at(text: str, pos: int) -> str | None:
  """The content of the box command starting at ``text[pos]``, or None."""
  cmd = next((c for c in BOX_COMMANDS if text.startswith(c, pos)), None)
  if cmd is None:
    return None
  after = pos + len(cmd)
  if text.startswith("{", after):
    group = brace_content(text, after)
    return None if group is None else group[0]
  m = _BARE_BOX_RE.match(text, after)  # "\boxed 5", as MATH sometimes writes.
  return None if m is None else m.group(1)


def unwrap_box(s: str) -> str:
  """``\\boxed{5}`` -> ``5`` when the whole answer is one box."""
  for cmd in BOX_COMMANDS:
    if s.startswith(cmd):
      content = box_at(s, 0)
      if content is not None and s.endswith("}") and len(content) == len(s) - len(cmd) - 2:
        return content.strip()
  return s


# --- Presentation removed before parsing. ---

_REMOVALS = ("\n", "\\!", "\\displaystyle", "\\textstyle", "^{\\circ}", "^\\circ", "\\circ",
             "\u00b0", "\\degree", "\\$", "$")
_REPLACEMENTS = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"),
                 ("\\dbinom", "\\binom"), ("\\tbinom", "\\binom"), ("\\mbox{", "\\text{"),
                 ("\\%", "%"), ("{,}", ","), ("\\\\", " "), ("\\ ", " "), ("\\,", " "),
                 ("\\;", " "), ("\\:", " "), ("\\qquad", " "), ("\\quad", " "), ("~", " "),
                 ("\u2212", "-"), ("\u00d7", "\\times "), ("\u00b7", "\\cdot "),
                 ("\u00f7", "\\div "), ("\u03c0", "\\pi "), ("\u221e", "\\infty "))
_SIZE_RE = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![A-Za-z])")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textrm|textit|textnormal|mathrm|mathbf|mathit)"
                          r"(?=\{)")
_EXPONENT_RE = re.compile(r"\^(?:[0-9]|\{[0-9]{1,3}\})$")
_UNIT_WORDS_RE = re.compile(r"(?:\s+[A-Za-z]{2,}\.?(?:\^[0-9])?)+\s*$")
_MAX_UNIT_PASSES = 4
# "3 and 4" is the list "3, 4"; "x \in (0, 1)" is the interval.
_AND_RE = re.compile(r"\s+and\s+")
_MEMBER_RE = re.compile(r"^\s*[A-Za-z]\s*\\in(?![A-Za-z])\s*")


def _text_groups(s: str) -> list[tuple[int, int, str]]:
  """``(start, end, content)`` of each ``\\text{...}``-like group, in order."""
  groups = []
  for m in _TEXT_CMD_RE.finditer(s):
    if groups and m.start() < groups[-1][1]:
      continue  # Nested inside the previous group.
    group = brace_content(s, m.end())
    if group is not None:
      groups.append((m.start(), group[1], group[0]))
  return groups


def strip_text(s: str) -> str:
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


def _strip_unit_words(s: str) -> str:
  """``12 inches`` -> ``12``: trailing words after a head without bare letters."""
  m = _UNIT_WORDS_RE.search(s)
  if m is None or m.start() == 0:
    return s
  head = s[:m.start()]
  bare = re.sub(r"\\[A-Za-z]+", "", head)
  if any(ch.isalpha() for ch in bare) or not any(ch.isdigit() or ch == "\\" for ch in head):
    return s
  return head


def _ungroup_thousands(s: str) -> str:
  """``1,000`` / ``-1 000 000`` -> ``1000`` when the whole answer is one grouped numeral."""
  core = s.strip()
  if THOUSANDS_RE.fullmatch(core.lstrip("-")):
    return core.replace(",", "")
  if _SPACED_THOUSANDS_RE.fullmatch(core):
    return core.replace(" ", "")
  return s


def clean_answer(answer: object) -> str | None:
  """A MATH answer without its presentation, spaces kept (see the module docstring).

  Returns:
    The cleaned text, or None if ``answer`` is not a string or is over
    ``MAX_ANSWER_CHARS``.
  """
  if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
    return None
  s = unwrap_box(answer.strip())
  for old in _REMOVALS:
    s = s.replace(old, " " if old == "\n" else "")
  for old, new in _REPLACEMENTS:
    s = s.replace(old, new)
  s = _SIZE_RE.sub("", s)
  s = strip_text(s).strip()
  s = _MEMBER_RE.sub("", _AND_RE.sub(", ", s))
  s = _strip_unit_words(s).strip().rstrip(".").strip()
  return _ungroup_thousands(s)


# --- The string normal form. ---

_VARIABLE_RE = re.compile(r"[A-Za-z](?:_\{?[0-9A-Za-z]\}?)?|\\[a-z]{2,8}", re.ASCII)


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
        group = brace_content(rest, 0)
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


def normalize_math_answer(answer: object) -> str | None:
  """A MATH answer in normal form, for string comparison.

  ``clean_answer`` (box, ``\\left``/``\\right``, spacing commands, ``$``,
  ``^\\circ``, trailing units, ``\\text{}`` wrappers, thousands separators),
  then: ``%`` and all whitespace removed, a single-variable left side
  (``x = 5``) dropped, ``\\frac12`` written ``\\frac{1}{2}``, ``\\sqrt2``
  written ``\\sqrt{2}`` and ``.5`` written ``0.5``.

  Returns:
    The normal form, or None if ``answer`` is not a string or it or its
    normal form is longer than ``MAX_ANSWER_CHARS``.
  """
  s = clean_answer(answer)
  if s is None:
    return None
  s = "".join(s.replace("%", "").split())
  s = _strip_variable(s)
  s = _fix_command_args(s, "\\frac", 2)
  s = _fix_command_args(s, "\\sqrt", 1)
  s = s.rstrip(".")
  if s.startswith("."):
    s = "0" + s
  elif s.startswith("-."):
    s = "-0" + s[1:]
  return s if len(s) <= MAX_ANSWER_CHARS else None
