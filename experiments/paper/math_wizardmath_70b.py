"""AlphaLLM on MATH with WizardMath-70B: the paper's MATH setting ("MATH large").

Command (the same on every host of the job; ``alphallm.distributed``
joins the hosts, see docs/scaling.md)::

  python -m alphallm.main --config=experiments/paper/math_wizardmath_70b.py \\
      --config.model.checkpoint=/path/to/WizardMath-70B-V1.0 \\
      --config.model.tokenizer=/path/to/WizardMath-70B-V1.0 \\
      --config.critics.checkpoint=/path/to/Llama-2-13b-hf \\
      --workdir=/path/to/workdir

Checkpoints are local HF directories provided by the user: nothing is
downloaded. MATH (Hendrycks format) is read from ``<repo>/../shared/data/math``
or ``$ALPHALLM_MATH_DIR``.

Recipe (PAPER.md): policy WizardMath-70B-V1.0 (a Llama-2-70b fine-tune; no
warm-start SFT); critics (value, PRM, tool-augmented ORM) trained once on 50
policy trajectories per prompt, lr 1e-6, one epoch; 1 round of
self-improvement on 5.9k imagined prompts, searched by option-level eta-MCTS
with Table 5's "MATH large" parameters (c 1.0, alpha 1.0, c_max(0) 60,
c_max(t>0) 10, c_min(0) 20, c_min(t>0) 3), fast rollouts n=4, node-score
weights all 1.0; SFT on the kept trajectories for up to 3 epochs, batch 128,
lr 5e-6 decaying to 1e-6, 10% linear warm-up. An option ends at a blank line
where a formula matched (``alphallm.tasks.math_task``).

Memory, from the parameter count (``alphallm.sharding``; GB = 1e9 bytes).
WizardMath-70B has Llama-2-70b's shape: P = 68.98e9 parameters (L=80,
D=8192, 64 query / 8 kv heads of 128, F=28672, V=32000, untied; + 8193 for
the value head; a vocabulary padded to 32001 adds 16384):

* weights in bfloat16: 2 B x P = 137.95 GB, more than one accelerator holds;
* training (AdamW, float32 weights + gradients + two moments, 16 B/param):
  16 B x P = 1103.6 GB = 1.10 TB, sharded over the devices by FSDP
  (``sharding.strategy = "fsdp"``): 34.5 GB per chip on a TPU v5p-64 (32
  chips x 95 GB), 17.2 GB per chip on a TPU v4-128 (64 chips x 32 GB),
  69.0 GB per GPU on 16 x H100-80GB (holds the state, leaves ~11 GB per GPU
  for activations: use 32 x H100 for the batch of 128), plus activations;
* activations of one 1152-token training row (bfloat16, ~L x (34 D + 5 N S)
  bytes per token without rematerialisation): 80 x (34 x 8192 + 5 x 64 x
  1152) x 1152 = 59.6 GB, so training needs per-block rematerialisation
  (~L x 2 D bytes per token kept: 1.51 GB per row), which alphallm.model
  does not have yet;
* inference-only search: the bfloat16 weights (137.95 GB) + the KV cache,
  327,680 B (320 KiB) per token (2 x L x K x H x 2 B). One problem searched
  with these settings (``sharding.search_memory_bytes``: 342 nodes keeping
  their 640-token paths, 512 prompt slots, 60 candidate rows, 4 rollout rows)
  holds 99.42 GB: tree 71.73 GB, prompt 0.17 GB, candidate sampling
  25.17 GB, rollouts 2.35 GB. With ``search_batch_size = 4``: 137.95 + 4 x
  99.42 = 536 GB in total, e.g. 8 x H100-80GB (640 GB, tight) or a TPU
  v5p-16 (8 chips, 760 GB), provided the search's arrays are sharded as well
  as the weights; ``search.recompute_prefix = True`` drops the tree's KV
  (71.73 GB per problem) for more compute.

Hardware: training needs a TPU v5p-64 or v4-128 pod slice (multi-host) or
16-32 x H100-80GB (2-4 hosts of 8); search alone fits one 8-GPU host.

If the checkpoint's vocabulary is 32001 (an added pad token), it divides no
``fsdp`` size: the embedding and ``lm_head`` are then split along D = 8192
instead, which works but makes XLA all-gather activations for the embedding
gradient (it warns "Involuntary full rematerialization").

Config keys beyond quickstart.py's layout (read by the HF-checkpoint loop):
``model.checkpoint``, ``model.tokenizer``, ``model.search_dtype``,
``model.rollout_checkpoint``, ``model.prompt_wrapper``, ``sharding.*``,
``task.eval_knobs``, ``sft.enabled``, ``sft.end_learning_rate``,
``critics.checkpoint``, ``critics.tool_orm``, ``loop.round_prompts``,
``loop.sft.epochs``, ``loop.sft.end_learning_rate``.
"""

import math

import ml_collections

from alphallm.critics import default_critic_config
from alphallm.search.mcts import default_search_config

MATH_TRAIN = 7500           # problems in MATH's train split
MATH_TEST = 5000            # ... and test split
ROUND_PROMPTS = (5900,)     # imagined prompts of the one round (paper: 5.9k)
SFT_BATCH = 128
SFT_EPOCHS = 3
TRAJECTORIES_PER_PROMPT = 50  # critic data (paper)
PROMPT_SLOTS = 512
COMPLETION_SLOTS = 640       # MATH solutions are long (LaTeX tokenizes at ~2.5 chars/token)

# WizardMath-V1.0's prompt (Alpaca style); ``{prompt}`` is the task's prompt.
WIZARDMATH_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{prompt}\n\n### Response: Let's think step "
    "by step.")

# Llama-2-13b, the critics' trunk (the paper: "13B was enough" for the value function).
LLAMA2_13B = dict(num_layers=40, embed_dim=5120, num_heads=40, num_kv_heads=40, head_dim=128,
                  mlp_dim=13824, rope_theta=10_000.0, norm_eps=1e-5, tie_embeddings=False,
                  dtype="bfloat16", param_dtype="float32")


def _sft(examples: int, checkpoint_every: int) -> ml_collections.ConfigDict:
  """SFT: up to 3 epochs, batch 128, lr 5e-6 -> 1e-6, 10% linear warm-up."""
  steps = math.ceil(SFT_EPOCHS * examples / SFT_BATCH)
  return ml_collections.ConfigDict(dict(
      steps=steps, epochs=SFT_EPOCHS, batch_size=SFT_BATCH, learning_rate=5e-6,
      end_learning_rate=1e-6, warmup_steps=math.ceil(0.1 * steps), weight_decay=0.0,
      grad_clip=1.0, value_coef=0.0, checkpoint_every=checkpoint_every, max_to_keep=2,
      log_every=10))


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_devices = 0  # 0: all devices.

  # Parameters and optimizer state sharded over all devices (alphallm.sharding).
  c.sharding = ml_collections.ConfigDict(dict(
      strategy="fsdp",       # "data_parallel" only for models that fit one device
      mesh_shape=(1, -1),    # (data, fsdp): every device holds 1/n of the model
      min_size=2 ** 16))     # smaller tensors are replicated

  # MATH, all levels and subjects. The task's knobs are data_dir, split,
  # levels, types; its prompt is "Q: <problem>\n\n".
  c.task = ml_collections.ConfigDict()
  c.task.name = "math"
  c.task.knobs = ml_collections.ConfigDict(dict(split="train"))
  c.task.eval_knobs = ml_collections.ConfigDict(dict(split="test"))

  c.data = ml_collections.ConfigDict()
  c.data.num_demos = MATH_TRAIN        # seed problems: the train split
  c.data.num_eval = MATH_TEST
  c.data.seq_len = PROMPT_SLOTS + COMPLETION_SLOTS

  c.model = ml_collections.ConfigDict(dict(
      checkpoint="/path/to/WizardMath-70B-V1.0",   # HF directory, provided by the user
      tokenizer="/path/to/WizardMath-70B-V1.0",    # tokenizer.json or tokenizer.model
      dtype="bfloat16",                             # compute
      param_dtype="float32",                        # master weights for training
      search_dtype="bfloat16",                      # weights cast for search / decoding
      rollout_checkpoint="",                        # smaller fast-rollout policy; "": the policy
      prompt_wrapper=WIZARDMATH_PROMPT))            # the model's instruction format

  # Round-0 SFT; the paper starts from WizardMath-70B as released.
  c.sft = _sft(c.data.num_demos, checkpoint_every=50)
  c.sft.enabled = False

  # Critics: value function, PRM and a tool-augmented ORM (a symbolic check of
  # the answer, critics.tool_orm_score), trained once on round-0 samples.
  c.critics = ml_collections.ConfigDict()
  c.critics.kinds = ("value", "prm", "orm")
  c.critics.checkpoint = "/path/to/Llama-2-13b-hf"  # the critics' initial trunk
  c.critics.tool_orm = True
  c.critics.num_problems = c.data.num_demos
  c.critics.num_calibration_problems = 500
  c.critics.critic = default_critic_config()
  c.critics.critic.shared_trunk = False
  c.critics.critic.model = dict(LLAMA2_13B)
  c.critics.critic.seq_len = c.data.seq_len
  c.critics.critic.collect.num_samples = TRAJECTORIES_PER_PROMPT
  c.critics.critic.collect.temperature = 1.0
  c.critics.critic.collect.max_new_tokens = COMPLETION_SLOTS
  c.critics.critic.collect.mc_rollouts = 8      # PRM labels (Math-Shepherd's N; not in the paper)
  c.critics.critic.collect.batch_size = 256
  c.critics.critic.train.learning_rate = 1e-6
  c.critics.critic.train.warmup_steps = 0
  c.critics.critic.train.batch_size = 128
  # One epoch of the value data: one row per trajectory.
  c.critics.critic.train.steps = math.ceil(
      c.critics.num_problems * TRAJECTORIES_PER_PROMPT / 128)
  c.critics.critic.train.checkpoint_every = 500

  # eta-MCTS, Table 5 "MATH large".
  c.search = default_search_config()
  c.search.policy = "puct"             # UCT-style selection with exploration constant c
  c.search.pb_c_init = 1.0             # c
  c.search.dirichlet_fraction = 0.0    # no root noise in the paper
  c.search.granularity = "option"      # blank line after a formula
  c.search.num_simulations = 341       # Table 7's best MATH budget (341 rollouts: 48.7%)
  c.search.max_option_len = 128
  c.search.max_completion_len = COMPLETION_SLOTS
  c.search.temperature = 1.0
  c.search.prior = "count"
  c.search.adaptive_branching.enabled = True
  c.search.adaptive_branching.alpha = 1.0
  c.search.adaptive_branching.c_max_root = 60
  c.search.adaptive_branching.c_max = 10
  c.search.adaptive_branching.c_min_root = 20
  c.search.adaptive_branching.c_min = 3
  c.search.num_actions = 60            # tree width when adaptive branching is off
  c.search.merge.enabled = True
  # In tokens. The paper's best is edit distance 50 (unit not stated; ~50 characters
  # at ~4 characters per Llama token).
  c.search.merge.threshold = 12
  c.search.rollout.enabled = True
  c.search.rollout.num_rollouts = 4
  c.search.rollout.max_len = COMPLETION_SLOTS
  c.search.rollout.temperature = 1.0
  c.search.weights.value = 1.0
  c.search.weights.prm = 1.0
  c.search.weights.orm = 1.0
  c.search.answer_selection = "best_leaf"

  c.eval = ml_collections.ConfigDict(dict(
      methods=("greedy", "self_consistency@50", "mcts"),
      batch_size=32, search_batch_size=4, max_new_tokens=COMPLETION_SLOTS, temperature=1.0))

  # One round of self-improvement.
  c.loop = ml_collections.ConfigDict()
  c.loop.rounds = len(ROUND_PROMPTS)
  c.loop.prompts_per_round = ROUND_PROMPTS[0]
  c.loop.round_prompts = ROUND_PROMPTS
  c.loop.imagination_mix = dict(perturb=0.5, backward=0.5)  # MetaMath-like
  c.loop.search_batch_size = 4
  c.loop.select = "best_leaf"            # the best critic score at the leaf
  c.loop.filter_by = "orm"               # keep it if its ORM score >= gamma
  c.loop.gamma = 0.5
  c.loop.cumulative = False
  c.loop.include_demos = False
  c.loop.distill = False
  c.loop.distill_weight = 1.0
  c.loop.sft = _sft(ROUND_PROMPTS[0], checkpoint_every=50)
  return c
