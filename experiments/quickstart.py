"""Quickstart: the whole AlphaLLM recipe on multi-step arithmetic, on a laptop CPU.

Run (a few minutes on a 2-core CPU):

  python -m alphallm.main --config=experiments/quickstart.py --workdir=/tmp/alphallm_quickstart

Round 0 warm-starts a tiny policy by SFT on a deliberately small demonstration
set (so greedy accuracy lands well below 100%), trains a value critic on the
policy's own samples, and evaluates greedy decoding, sampling baselines and
eta-MCTS. Rounds 1 and 2 imagine new prompts, search them with eta-MCTS, keep
the verified trajectories and fine-tune the policy on them.
"""

import ml_collections

from alphallm.critics import default_critic_config
from alphallm.search.mcts import default_search_config


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_devices = 0  # 0: all local devices (data-parallel SFT step).

  c.task = ml_collections.ConfigDict()
  c.task.name = "arithmetic"
  c.task.knobs = ml_collections.ConfigDict(
      dict(min_ops=2, max_ops=4, max_operand=9, ops="+-*", max_value=99))

  c.data = ml_collections.ConfigDict()
  # Small on purpose (an imperfect warm start), but not too small: with 500
  # demonstrations the round-0 policy's greedy accuracy ranged from 14% to 43%
  # over seeds 0-2 (memorised demos, seed-dependent generalisation); with 750
  # it is 49-57% on held-out problems.
  c.data.num_demos = 750
  c.data.num_eval = 256       # held-out problems, disjoint from every train split
  c.data.seq_len = 64

  c.model = ml_collections.ConfigDict(dict(
      num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=192,
      rope_theta=10_000.0, tie_embeddings=True, dtype="float32", param_dtype="float32"))

  c.sft = ml_collections.ConfigDict(dict(
      steps=1000, batch_size=32, learning_rate=3e-3, warmup_steps=20, weight_decay=0.01,
      grad_clip=1.0, value_coef=0.0, checkpoint_every=250, max_to_keep=2, log_every=50))

  # Critics, trained once after round 0 (the paper keeps them fixed).
  c.critics = ml_collections.ConfigDict()
  c.critics.kinds = ("value",)        # any of "value", "prm", "orm"
  c.critics.num_problems = 500        # fresh prompts (not demos, not eval) sampled for critic data
  c.critics.num_calibration_problems = 128
  c.critics.critic = default_critic_config()
  c.critics.critic.seq_len = 64
  c.critics.critic.model = dict(num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2,
                                head_dim=16, mlp_dim=192)
  c.critics.critic.collect.num_samples = 8
  c.critics.critic.collect.mc_rollouts = 0
  c.critics.critic.collect.max_new_tokens = 40
  c.critics.critic.collect.batch_size = 256
  c.critics.critic.train.steps = 600
  c.critics.critic.train.batch_size = 64
  c.critics.critic.train.learning_rate = 2e-3
  c.critics.critic.train.checkpoint_every = 300
  # Tool-augmented critics: an in-graph calculator zeroes the score of any state
  # with a wrong arithmetic step (alphallm.tools; it never sees the answer key).
  c.critics.calculator = True

  # eta-MCTS (alphallm.search.mcts.default_search_config documents every knob).
  c.search = default_search_config()
  c.search.num_simulations = 32
  c.search.num_actions = 12          # candidate steps per node: more candidates, more
  c.search.temperature = 1.5         # ... chances that one is right (diverse at T=1.5)
  c.search.max_option_len = 12
  c.search.max_completion_len = 40
  c.search.weights.value = 0.0       # the policy's own value head is not trained here
  c.search.weights.prm = 1.0         # the value critic scores each state
  c.search.weights.orm = 1.0         # ... and finished solutions
  c.search.answer_selection = "orm_vote"   # the tool-augmented ORM votes over answers

  c.eval = ml_collections.ConfigDict(dict(
      methods=("greedy", "sampling", "self_consistency@8", "best_of@8", "mcts"),
      batch_size=64, search_batch_size=64, max_new_tokens=40, temperature=1.0))

  # Self-improvement rounds.
  c.loop = ml_collections.ConfigDict()
  c.loop.rounds = 2
  c.loop.prompts_per_round = 512
  # Rule-based rewrites of the demonstrations, and questions the policy writes.
  c.loop.imagination_mix = dict(perturb=0.5, backward=0.3, policy=0.2)
  c.loop.imagination_temperature = 1.0
  c.loop.search_batch_size = 64
  c.loop.select = "best_leaf"         # the paper: the best critic score at the leaf
  c.loop.filter_by = "verifier"       # or "orm": keep a trajectory if its score >= gamma
  c.loop.gamma = 0.5
  c.loop.cumulative = True            # SFT on the kept trajectories of all rounds so far
  c.loop.include_demos = True
  c.loop.distill = False              # + mctx's improved root policy as a weighted target
  c.loop.distill_weight = 1.0
  c.loop.sft = ml_collections.ConfigDict(dict(
      steps=300, batch_size=32, learning_rate=1e-3, warmup_steps=10, weight_decay=0.01,
      grad_clip=1.0, value_coef=0.0, checkpoint_every=150, max_to_keep=2, log_every=50))
  return c
