import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

from alphallm import tools
from alphallm.tasks import get_task, parsing
from alphallm.tokenizer import CharTokenizer

TOK = CharTokenizer()
CRITIC = tools.make_calculator_critic(TOK)


def _score(texts, length=64):
  ids = np.zeros((len(texts), length), np.int32)
  mask = np.zeros((len(texts), length), bool)
  for i, t in enumerate(texts):
    e = [TOK.bos_id] + TOK.encode(t)
    ids[i, :len(e)] = e
    mask[i, :len(e)] = True
  return np.asarray(CRITIC(None, jnp.asarray(ids), jnp.asarray(mask)))


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
  assert _score(["1+2=3"])[0] == 1.0            # a final line without newline is judged
  assert _score(["1+2=4"])[0] == 0.0
  assert _score(["1+2=3\n1+2="])[0] == 1.0      # an unfinished step is not judged
