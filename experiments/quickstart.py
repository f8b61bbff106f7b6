"""Quickstart: the whole AlphaLLM recipe on multi-step arithmetic, on a laptop CPU.

Run (the README states the measured time):

  python -m alphallm.main --config=experiments/quickstart.py --workdir=/tmp/alphallm_quickstart

The ``tiny`` variant (``--config=experiments/quickstart.py:tiny``) is the same
recipe at toy sizes, every phase in seconds: the tests, the notebooks' small
mode and the fault tests run it.

Round 0 warm-starts a tiny policy by SFT on a deliberately small demonstration
set (so greedy accuracy lands well below 100%), trains a value critic on the
policy's own samples, and evaluates greedy decoding, sampling baselines and
eta-MCTS. Rounds 1 and 2 imagine new prompts, search them with eta-MCTS, keep
the verified trajectories and fine-tune the policy on them.

Only what differs from ``alphallm.schema.default_config()`` is set here.
Provenance of the values (measured in session 2, on 128 fresh problems drawn
with ``loop.fresh_problems(ctx, 128, "probe_val")``, not on the eval split):

* ``data.num_demos = 750``: with 500 demonstrations the round-0 greedy accuracy
  ranged 14-43% over seeds 0-2; with 750 it was 49-57%.
* ``search.num_actions = 12``, ``search.temperature = 1.5``,
  ``search.answer_selection = "orm_vote"``: calc-only A16 56.2% and A16 T2
  57.0% vs A8 50.0-51.6% on those problems; the vote was the best of the
  answer selections compared there.
"""

import ml_collections

from alphallm import schema


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = schema.default_config()
  c.task.name = "arithmetic"
  c.task.knobs = ml_collections.ConfigDict(
      dict(min_ops=2, max_ops=4, max_operand=9, ops="+-*", max_value=99))
  c.model.mlp_dim = 192

  # Critics, trained once after round 0 (the paper keeps them fixed).
  cc = c.critics
  cc.calculator = True      # the arithmetic task's step checker zeroes a wrong step's score
  cc.critic.seq_len = 64
  cc.critic.model = ml_collections.ConfigDict(dict(
      num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=192))
  cc.critic.collect.mc_rollouts = 0
  cc.critic.collect.max_new_tokens = 40
  cc.critic.collect.batch_size = 256
  cc.critic.train.steps = 600
  cc.critic.train.batch_size = 64
  cc.critic.train.learning_rate = 2e-3
  cc.critic.train.checkpoint_every = 300

  s = c.search
  s.num_simulations = 32
  s.num_actions = 12
  s.temperature = 1.5
  s.max_option_len = 12
  s.max_completion_len = 40
  s.weights.value = 0.0     # the policy's own value head is not trained here
  s.answer_selection = "orm_vote"

  c.eval.methods = ("greedy", "sampling", "self_consistency@8", "best_of@8", "mcts")
  c.eval.max_new_tokens = 40
  # Rule-based rewrites of the demonstrations, and questions the policy writes.
  c.loop.imagination_mix = ml_collections.ConfigDict(dict(perturb=0.5, backward=0.3,
                                                          policy=0.2))
  if variant == "tiny":
    tiny(c)
  elif variant:
    raise ValueError(f"experiments/quickstart.py: unknown variant {variant!r}; known: 'tiny'")
  return c


def tiny(c: ml_collections.ConfigDict) -> None:
  """The quickstart's recipe at toy sizes: every phase runs, each in seconds."""
  schema.shrink_to_tiny(c)
  c.search.num_actions = 2
  c.eval.methods = ("greedy", "sampling", "self_consistency@2", "mcts")
  c.loop.rounds = 1
