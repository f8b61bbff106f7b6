"""What the paper-scale configs share: SFT, critics, eta-MCTS, evaluation and loop.

``gsm8k_llama2_70b.py`` and ``math_wizardmath_70b.py`` differ in the task,
the checkpoints, the sequence slots, Table 5's parameters and the round
sizes; everything else is the paper's common recipe, built here.
"""

import math

import ml_collections

from alphallm import schema


SFT_BATCH = 128
SFT_EPOCHS = 3
TRAJECTORIES_PER_PROMPT = 50  # critic data (paper)

# Llama-2-13b, the critics' trunk (the paper: "13B was enough" for the value function).
LLAMA2_13B = dict(num_layers=40, embed_dim=5120, num_heads=40, num_kv_heads=40, head_dim=128,
                  mlp_dim=13824, rope_theta=10_000.0, norm_eps=1e-5, tie_embeddings=False,
                  dtype="bfloat16", param_dtype="float32")


def sft(examples: int, checkpoint_every: int = 50) -> ml_collections.ConfigDict:
  """SFT: up to 3 epochs, batch 128, lr 5e-6 -> 1e-6, 10% linear warm-up."""
  steps = math.ceil(SFT_EPOCHS * examples / SFT_BATCH)
  return ml_collections.ConfigDict(dict(
      steps=steps, epochs=SFT_EPOCHS, batch_size=SFT_BATCH, learning_rate=5e-6,
      end_learning_rate=1e-6, warmup_steps=math.ceil(0.1 * steps), weight_decay=0.0,
      grad_clip=1.0, value_coef=0.0, checkpoint_every=checkpoint_every, max_to_keep=2,
      log_every=10))


def sharding() -> ml_collections.ConfigDict:
  """Parameters and optimizer state sharded over all devices (alphallm.sharding)."""
  return ml_collections.ConfigDict(dict(
      strategy="fsdp",       # "data_parallel" only for models that fit one device
      mesh_shape=(1, "auto"),  # (data, fsdp): every device holds 1/n of the model
      min_size=2 ** 16))     # smaller tensors are replicated


def model(checkpoint: str, **extra) -> ml_collections.ConfigDict:
  """An HF checkpoint directory (provided by the user) holding the tokenizer too."""
  return ml_collections.ConfigDict(dict(
      checkpoint=checkpoint,      # HF directory, provided by the user
      tokenizer=checkpoint,       # tokenizer.json or tokenizer.model (dir or file)
      dtype="bfloat16",           # compute
      param_dtype="float32",      # master weights for training
      search_dtype="bfloat16",    # weights cast for search / decoding
      remat=True,                 # per-block rematerialisation: 70B activations fit
      rollout_checkpoint="",      # a smaller fast-rollout policy is not supported: the policy
      **extra))


def critics(num_problems: int, seq_len: int, completion_slots: int
            ) -> ml_collections.ConfigDict:
  """Value function, PRM and ORM on a Llama-2-13b trunk, trained once on round-0 samples:
  50 trajectories per prompt, lr 1e-6, one epoch."""
  c = ml_collections.ConfigDict()
  c.kinds = ("value", "prm", "orm")
  c.checkpoint = "/path/to/Llama-2-13b-hf"  # the critics' initial trunk
  c.num_problems = num_problems
  c.num_calibration_problems = 500
  c.critic = schema.default_config().critics.critic
  c.critic.shared_trunk = False
  c.critic.model = dict(LLAMA2_13B)
  c.critic.seq_len = seq_len
  c.critic.collect.num_samples = TRAJECTORIES_PER_PROMPT
  c.critic.collect.temperature = 1.0
  c.critic.collect.max_new_tokens = completion_slots
  c.critic.collect.mc_rollouts = 8      # PRM labels (Math-Shepherd's N; not in the paper)
  c.critic.collect.batch_size = 256
  c.critic.train.learning_rate = 1e-6
  c.critic.train.warmup_steps = 0
  c.critic.train.batch_size = 128
  # One epoch of the value data: one row per trajectory.
  c.critic.train.steps = math.ceil(num_problems * TRAJECTORIES_PER_PROMPT / 128)
  c.critic.train.checkpoint_every = 500
  return c


def search(*, c: float, c_min_root: int, c_min: int, num_simulations: int,
           max_option_len: int, completion_slots: int) -> ml_collections.ConfigDict:
  """Option-level eta-MCTS with Table 5's parameters (alpha 1, c_max(0) 60, c_max(t>0) 10),
  fast rollouts n=4 and node-score weights all 1."""
  s = schema.default_config().search
  s.policy = "puct"              # UCT-style selection with exploration constant c
  s.pb_c_init = c
  s.dirichlet_fraction = 0.0     # no root noise in the paper
  s.granularity = "option"
  s.num_simulations = num_simulations
  s.max_option_len = max_option_len
  s.max_completion_len = completion_slots
  s.temperature = 1.0
  s.prior = "count"
  ab = s.adaptive_branching
  ab.enabled, ab.alpha = True, 1.0
  ab.c_max_root, ab.c_max, ab.c_min_root, ab.c_min = 60, 10, c_min_root, c_min
  s.num_actions = 60             # tree width when adaptive branching is off
  s.merge.enabled = True
  # In tokens. The paper's best is edit distance 50 (unit not stated; ~50 characters
  # at ~4 characters per Llama token).
  s.merge.threshold = 12
  s.rollout.enabled = True
  s.rollout.num_rollouts = 4
  s.rollout.max_len = completion_slots
  s.rollout.temperature = 1.0
  s.weights.value = s.weights.prm = s.weights.orm = 1.0
  s.answer_selection = "best_leaf"
  return s


def evaluation(completion_slots: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      methods=("greedy", "self_consistency@50", "mcts"),
      batch_size=32, search_batch_size=4, max_new_tokens=completion_slots, temperature=1.0))


def loop(round_prompts: tuple[int, ...]) -> ml_collections.ConfigDict:
  """Rounds of self-improvement on held-out train questions (see the configs' docstrings)."""
  c = ml_collections.ConfigDict()
  c.rounds = len(round_prompts)
  c.prompts_per_round = round_prompts[0]
  c.round_prompts = round_prompts
  # GSM8K and MATH have no rule-based rewrites and no solver for new questions:
  # each round searches train questions held out from every other phase.
  c.imagination_mix = dict(held_out=1.0)
  c.search_batch_size = 4
  c.select = "best_leaf"            # the best critic score at the leaf
  c.filter_by = "orm"               # keep it if its ORM score >= gamma
  c.gamma = 0.5
  c.cumulative = False              # round k fine-tunes pi^(k-1) on round k's data
  c.include_demos = False
  c.distill = False
  c.distill_weight = 1.0
  c.sft = sft(round_prompts[0])
  return c
