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
warm-start SFT; its Alpaca-style prompt, ``model.prompt_wrapper =
"wizardmath"``); critics (value, PRM, ORM) trained once on 50 policy
trajectories per prompt, lr 1e-6, one epoch; 1 round of self-improvement,
searched by option-level eta-MCTS
with Table 5's "MATH large" parameters (c 1.0, alpha 1.0, c_max(0) 60,
c_max(t>0) 10, c_min(0) 20, c_min(t>0) 3), fast rollouts n=4, node-score
weights all 1.0; SFT on the kept trajectories for up to 3 epochs, batch 128,
lr 5e-6 decaying to 1e-6, 10% linear warm-up. An option ends at a blank line
where a formula matched (``alphallm.tasks.math_task``). The shared recipe is
built in ``experiments/paper/common.py``.

Departures from the paper: (1) its round searches 5.9k new questions imagined
by an LLM; MATH has no rule-based rewrite and no solver for a new question,
so the round searches 5.9k train questions held out from the seed split
(100) and the critic data (1.3k) (``loop.imagination_mix =
dict(held_out=1.0)``). (2) The paper's ORM is tool-augmented with a symbolic
check of the answer; the compiled search's ORM slot holds the learned ORM,
and the bounded symbolic checker (``alphallm.graders``,
``critics.tool_orm_score``) is host-side only: not wired into the search.

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
  (~L x 2 D bytes per token kept: 1.51 GB per row): ``model.remat = True``
  (set by ``common.model``);
* inference-only search: the bfloat16 weights (137.95 GB) + the KV cache,
  327,680 B (320 KiB) per token (2 x L x K x H x 2 B). One problem searched
  with these settings (``sharding.search_memory_bytes``: 342 nodes keeping
  their 640-token paths, 512 prompt slots, 60 candidate rows, 4 rollout rows)
  holds 99.46 GB: tree 71.78 GB, prompt 0.17 GB, candidate sampling
  25.17 GB, rollouts 2.35 GB. With ``search_batch_size = 4``: 137.95 + 4 x
  99.46 = 536 GB in total, e.g. 8 x H100-80GB (640 GB, tight) or a TPU
  v5p-16 (8 chips, 760 GB), provided the search's arrays are sharded as well
  as the weights; ``search.recompute_prefix = True`` drops the tree's KV
  (71.78 GB per problem) for more compute.

Hardware: training needs a TPU v5p-64 or v4-128 pod slice (multi-host) or
16-32 x H100-80GB (2-4 hosts of 8); search alone fits one 8-GPU host.

If the checkpoint's vocabulary is 32001 (an added pad token), it divides no
``fsdp`` size: the embedding and ``lm_head`` are then split along D = 8192
instead, which works but makes XLA all-gather activations for the embedding
gradient (it warns "Involuntary full rematerialization").

Config keys beyond quickstart.py's layout (read by the HF-checkpoint loop):
``model.checkpoint``, ``model.tokenizer``, ``model.search_dtype``,
``model.prompt_wrapper``, ``sharding.*``,
``task.eval_knobs``, ``sft.enabled``, ``sft.end_learning_rate``,
``critics.checkpoint``, ``loop.round_prompts``,
``loop.sft.epochs``, ``loop.sft.end_learning_rate``.
"""

import ml_collections

from alphallm import config_files
from alphallm import schema

common = config_files.load_sibling(__file__, "common.py")

MATH_TRAIN = 7500           # problems in MATH's train split
MATH_TEST = 5000            # ... and test split
NUM_SEEDS = 100             # the seed split ("demonstrations"; SFT data when sft.enabled)
CRITIC_PROBLEMS = 1300      # prompts of the critics' training trajectories
ROUND_PROMPTS = (5900,)     # held-out questions of the one round (paper: 5.9k imagined)
PROMPT_SLOTS = 512
COMPLETION_SLOTS = 640       # MATH solutions are long (LaTeX tokenizes at ~2.5 chars/token)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_devices = "auto"
  c.sharding = common.sharding()

  # MATH, all levels and subjects. The task's knobs are data_dir, split,
  # levels, types; its prompt is "Q: <problem>\n\n".
  c.task = ml_collections.ConfigDict()
  c.task.name = "math"
  c.task.knobs = ml_collections.ConfigDict(dict(split="train"))
  c.task.eval_knobs = ml_collections.ConfigDict(dict(split="test"))

  c.data = ml_collections.ConfigDict()
  c.data.num_demos = NUM_SEEDS
  c.data.num_eval = MATH_TEST
  c.data.seq_len = PROMPT_SLOTS + COMPLETION_SLOTS

  # WizardMath-V1.0's instruction format around every prompt (alphallm.prompts).
  c.model = common.model("/path/to/WizardMath-70B-V1.0", prompt_wrapper="wizardmath")

  # Round-0 SFT; the paper starts from WizardMath-70B as released.
  c.sft = common.sft(c.data.num_demos)
  c.sft.enabled = False

  c.critics = common.critics(CRITIC_PROBLEMS, c.data.seq_len, COMPLETION_SLOTS)

  # eta-MCTS, Table 5 "MATH large"; an option ends at a blank line after a
  # formula. 341 simulations: Table 7's best MATH budget (341 rollouts: 48.7%).
  c.search = common.search(c=1.0, c_min_root=20, c_min=3, num_simulations=341,
                           max_option_len=128, completion_slots=COMPLETION_SLOTS)
  c.eval = common.evaluation(COMPLETION_SLOTS)
  c.loop = common.loop(ROUND_PROMPTS)
  return schema.overridden(c)
