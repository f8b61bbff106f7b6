"""AlphaLLM on GSM8K with Llama-2-70b: the paper's GSM8K setting ("GSM8K large").

Command (the same on every host of the job; ``alphallm.distributed``
joins the hosts, see docs/scaling.md)::

  python -m alphallm.main --config=experiments/paper/gsm8k_llama2_70b.py \\
      --config.model.checkpoint=/path/to/Llama-2-70b-hf \\
      --config.model.tokenizer=/path/to/Llama-2-70b-hf \\
      --config.critics.checkpoint=/path/to/Llama-2-13b-hf \\
      --workdir=/path/to/workdir

Checkpoints are local directories in HF format (``config.json`` +
safetensors + ``tokenizer.json``/``tokenizer.model``), provided by the user:
nothing is downloaded. GSM8K is read from ``<repo>/../shared/data/gsm8k`` or
``$ALPHALLM_GSM8K_DIR``.

Recipe (PAPER.md): policy Llama-2-70b (4-shot prompts, no warm-start SFT);
critics (value, PRM, ORM) trained once on 50 policy trajectories per prompt,
lr 1e-6, one epoch; 2 rounds of self-improvement, searched by option-level eta-MCTS with Table 5's "GSM8K large"
parameters (c 1.5, alpha 1.0, c_max(0) 60, c_max(t>0) 10, c_min(0) 40,
c_min(t>0) 2), fast rollouts n=4, node-score weights all 1.0; SFT on the kept
trajectories for up to 3 epochs, batch 128, lr 5e-6 decaying to 1e-6, 10%
linear warm-up. The shared recipe is built in ``experiments/paper/common.py``.

Departure from the paper: its rounds search 6.4k then 7.9k new questions
imagined by an LLM. GSM8K has no rule-based rewrite and no solver to answer a
new question, so here each round searches 2.8k train questions held out from
the seed split (64), the critic data (1.6k) and the other round
(``loop.imagination_mix = dict(held_out=1.0)``): rejection-sampling
fine-tuning on real questions.

Memory, from the parameter count (``alphallm.sharding``; GB = 1e9 bytes).
Llama-2-70b has P = 68.98e9 parameters (L=80, D=8192, 64 query / 8 kv heads
of 128, F=28672, V=32000, untied; + 8193 for the value head):

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
  with these settings (``sharding.search_memory_bytes``: 231 nodes keeping
  their 384-token paths, 768 prompt slots, 60 candidate rows, 4 rollout rows)
  holds 55.27 GB: tree 29.10 GB, prompt 0.25 GB, candidate sampling
  23.91 GB, rollouts 2.01 GB. With ``search_batch_size = 4``: 137.95 + 4 x
  55.27 = 359 GB in total, e.g. 8 x H100-80GB (640 GB) or a TPU v5p-16
  (8 chips, 760 GB), provided the search's arrays are sharded as well as the
  weights; ``search.recompute_prefix = True`` drops the tree's KV (29.10 GB
  per problem) for more compute.

Hardware: training needs a TPU v5p-64 or v4-128 pod slice (multi-host) or
16-32 x H100-80GB (2-4 hosts of 8); search alone fits one 8-GPU host.

Config keys beyond quickstart.py's layout (read by the HF-checkpoint loop):
``model.checkpoint``, ``model.tokenizer``, ``model.search_dtype``,
``sharding.*``, ``task.eval_knobs``,
``sft.enabled``, ``sft.end_learning_rate``, ``critics.checkpoint``,
``loop.round_prompts``, ``loop.sft.epochs``, ``loop.sft.end_learning_rate``.
"""

import ml_collections

from alphallm import config_files
from alphallm import schema

common = config_files.load_sibling(__file__, "common.py")

GSM8K_TRAIN = 7473          # problems in GSM8K's train split
GSM8K_TEST = 1319           # ... and test split
NUM_SHOTS = 4
NUM_SEEDS = 64              # the seed split ("demonstrations"; SFT data when sft.enabled)
CRITIC_PROBLEMS = 1600      # prompts of the critics' training trajectories
ROUND_PROMPTS = (2800, 2800)  # held-out questions per round (paper: 6.4k, 7.9k imagined)
PROMPT_SLOTS = 768           # 4-shot prompts: up to ~2.1k characters, ~700 Llama tokens
COMPLETION_SLOTS = 384       # the longest GSM8K solution is ~750 characters


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_devices = "auto"
  c.sharding = common.sharding()

  # GSM8K, 4-shot "Q: ... / The answer is N." prompts for the base model.
  c.task = ml_collections.ConfigDict()
  c.task.name = "gsm8k"
  c.task.knobs = ml_collections.ConfigDict(dict(
      split="train", num_shots=NUM_SHOTS, shots_seed=0, prompt_format="plain",
      answer_line="sentence", calculator_annotations=False))
  # Evaluation problems come from the test split (same prompt format).
  c.task.eval_knobs = ml_collections.ConfigDict(dict(
      split="test", num_shots=NUM_SHOTS, shots_seed=0, prompt_format="plain",
      answer_line="sentence", calculator_annotations=False))

  c.data = ml_collections.ConfigDict()
  c.data.num_demos = NUM_SEEDS
  c.data.num_eval = GSM8K_TEST
  c.data.seq_len = PROMPT_SLOTS + COMPLETION_SLOTS

  c.model = common.model("/path/to/Llama-2-70b-hf")

  # Round-0 SFT on the seed split. The paper starts from the base model
  # (enabled=False); Table 2's "SFT on 7.5k" baseline needs num_demos = 7469.
  c.sft = common.sft(c.data.num_demos)
  c.sft.enabled = False

  c.critics = common.critics(CRITIC_PROBLEMS, c.data.seq_len, COMPLETION_SLOTS)

  # eta-MCTS, Table 5 "GSM8K large"; an option is one line. 230 simulations:
  # Table 7's best GSM8K budget (230 rollouts: 88.9%).
  c.search = common.search(c=1.5, c_min_root=40, c_min=2, num_simulations=230,
                           max_option_len=64, completion_slots=COMPLETION_SLOTS)
  c.eval = common.evaluation(COMPLETION_SLOTS)
  c.loop = common.loop(ROUND_PROMPTS)
  return schema.overridden(c)
