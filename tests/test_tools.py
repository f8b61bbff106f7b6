import re

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from alphallm import tools
from alphallm.tasks import get_task, parsing
from alphallm.tokenizer import CharTokenizer

TOK = CharTokenizer()
CRITIC = tools.make_calculator_critic(TOK)
LENIENT = tools.make_calculator_critic(TOK, strict=False)
_COMPACT = re.compile(r"[0-9]+[-+*/][0-9]+=[0-9]+")


def _score(texts, length=64, critic=CRITIC):
  ids = np.zeros((len(texts), length), np.int32)
  mask = np.zeros((len(texts), length), bool)
  for i, t in enumerate(texts):
    e = [TOK.bos_id] + TOK.encode(t)
    ids[i, :len(e)] = e
    mask[i, :len(e)] = True
  return np.asarray(critic(None, jnp.asarray(ids), jnp.asarray(mask)))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 9999), st.sampled_from("+-*/"), st.integers(0, 9999), st.integers(0, 9999))
def test_agrees_with_host_parser(a, op, b, c):
  line = f"{a}{op}{b}={c}"
  expected = parsing.check_step(line)
  assert expected is not None
  assert _score([f"Q: x\n{line}\nA: 1"])[0] == float(expected)


def test_demonstrations_pass_and_a_wrong_step_fails():
  for name in ("arithmetic", "countdown"):
    task = get_task(name)
    problems = task.generate(0, 32)
    texts = [task.prompt(p) + task.demonstration(p) for p in problems]
    assert _score(texts).tolist() == [1.0] * 32
  assert _score(["Q: ((7+5)*3)-4\n7+5=12\n12*3=35\n35-4=31\nA: 31"])[0] == 0.0
  assert _score(["Q: ((7+5)*3)-4\n7+5=12\n12*3=36\n36-4=32\nA: 32"])[0] == 1.0


def test_non_steps_and_overlong_numbers_are_not_judged():
  assert _score(["Q: 1+1=3 is not a step line\nhello\nA: 2"])[0] == 1.0
  assert _score(["12345+1=2\n"])[0] == 1.0      # too many digits: not judged
  assert _score(["7/0=0\n"])[0] == 0.0          # division by zero is wrong
  assert _score(["8/3=2\n"])[0] == 0.0          # inexact division is wrong
  # A last line ended by EOS is finished and judged; one ended by padding may continue.
  eos = TOK.decode([TOK.eos_id]) if TOK.decode([TOK.eos_id]) else None
  assert eos is None  # decode drops EOS: append the id itself
  assert _score_ids(["1+2=3"], eos=True)[0] == 1.0
  assert _score_ids(["1+2=4"], eos=True)[0] == 0.0
  assert _score(["1+2=4"])[0] == 1.0             # open: may still become 1+2=45...
  assert _score(["3*7=2"])[0] == 1.0             # a token-level node on its way to 21
  assert _score(["1+2=3\n1+2="], critic=LENIENT)[0] == 1.0   # lenient: an unfinished step
  assert _score(["1+2=3\n1+2=\n"])[0] == 0.0                # is not judged; strict: wrong
  assert _score(["1+2=3\n1+2="])[0] == 1.0                   # ... once the line is finished
  assert _score_ids(["1+2=3\n1+2="], eos=True)[0] == 0.0


def _score_ids(texts, eos=False, length=64, critic=CRITIC):
  """``_score`` with EOS after each text (it ends the last line)."""
  ids = np.zeros((len(texts), length), np.int32)
  mask = np.zeros((len(texts), length), bool)
  for i, t in enumerate(texts):
    e = [TOK.bos_id] + TOK.encode(t) + ([TOK.eos_id] if eos else [])
    ids[i, :len(e)] = e
    mask[i, :len(e)] = True
  return np.asarray(critic(None, jnp.asarray(ids), jnp.asarray(mask)))


# Lines a search at high temperature really wrote (strict mode judges them wrong).
MALFORMED = ["21*4=2C2", "16*5=", "22-7-72", "6*9=(1", "7-9=6*9", "6", "7-9=-2", "1+2=3 ",
             "12+3=15=15", "1++2=3", "3*7=21 "]


@pytest.mark.parametrize("line", MALFORMED)
def test_strict_judges_malformed_step_lines_wrong(line):
  text = f"Q: 3*7\n3*7=21\n{line}\nA: 1"
  assert parsing.check_step_line(line, strict=True) is False
  assert _score([text])[0] == 0.0
  assert _score([text], critic=LENIENT)[0] == float(
      parsing.check_step_line(line, strict=False) is not False)


@pytest.mark.parametrize("line,expected", [
    ("12345+1=2", None), ("1+23456=2", None), ("1+2=34567", None),  # overflow: not judged
    ("A: 12", None), ("Q: 1+1=3", None), ("", None), (" 1+1=2", True), ("hello 1+1=3", None),
    ("\u0667+5=12", None), ("1+1=2", True), ("9/3=3", True), ("9/2=4", False),
])
def test_strict_line_judgement(line, expected):
  assert parsing.check_step_line(line, strict=True) is expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789+-*/= xA:", max_size=14))
def test_strict_twin_agrees_with_host_on_any_line(line):
  """The in-graph machine and ``parsing.check_step_line`` agree, strict and lenient."""
  for strict, critic in ((True, CRITIC), (False, LENIENT)):
    host = parsing.check_step_line(line, strict=strict)
    judged_as_equation = strict and line[:1].isdigit()
    if not judged_as_equation and host is not None and (
        not _COMPACT.fullmatch(line)
        or max(len(n) for n in re.findall(r"[0-9]+", line)) > tools.MAX_DIGITS):
      continue  # parse_step also reads signs, spaces and long numbers; the machine does not
    assert _score([f"Q: x\n{line}\nA: 1"], critic=critic)[0] == float(host is not False), (
        line, strict, host)


def test_tool_orm_is_strict_for_equation_step_tasks():
  from alphallm import critics
  arith, gsm = get_task("arithmetic"), get_task("countdown")
  assert arith.equation_steps and gsm.equation_steps
  assert critics.tool_orm_score(arith, "3*7=21\n21*4=2C2\nA: 22") == 0.0
  assert critics.tool_orm_score(arith, "3*7=21\n21*4=84\nA: 84") == 1.0
  assert critics.check_arithmetic("3*7=21\n21*4=2C2\nA: 22", strict=False) == (1, 0)


@pytest.mark.parametrize("line", ["0/0=-0", "12345+1=5", "-7*3=21", " 7+5=13", "7 +5=13"])
def test_lines_only_the_host_parser_reads_are_not_judged_in_graph(line):
  """Signs, spaces and numbers over MAX_DIGITS: the host judges, the machine leaves them."""
  assert parsing.check_step_line(line, strict=False) is False
  assert _score([f"Q: x\n{line}\nA: 1"], critic=LENIENT)[0] == 1.0


def test_answer_format_checker():
  """Malformed answer lines score 0 (an integer restating the last step), others 1."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from alphallm.tokenizer import CharTokenizer  # pylint: disable=g-import-not-at-top
  tok = CharTokenizer()
  check = tools.make_answer_format_critic(tok, "A: ", "-0123456789", restates_last_result=True)
  loose = tools.make_answer_format_critic(tok, "A: ", "-0123456789")
  texts = ["3+3=6\nA: 6", "3+3=6\nA: 63", "3+3=6\nA: 6+1", "3+3=6\nA: 4A: 2", "3+3=6\n",
           "A: -5", "3+3=6\nA: "]
  s = 20
  rows, masks = [], []
  for t in texts:
    ids = tok.encode(t) + [tok.eos_id]
    rows.append(ids + [tok.pad_id] * (s - len(ids)))
    masks.append([True] * len(ids) + [False] * (s - len(ids)))
  rows, masks = jnp.asarray(rows), jnp.asarray(masks)
  assert check(None, rows, masks).tolist() == [1, 0, 0, 0, 1, 1, 0]
  assert loose(None, rows, masks).tolist() == [1, 1, 0, 0, 1, 1, 0]
