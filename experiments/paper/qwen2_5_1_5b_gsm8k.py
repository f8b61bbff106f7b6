"""AlphaLLM on GSM8K with Qwen2.5-1.5B-Instruct, on one GPU.

A small real instruct model through the paper's code path: an HF checkpoint
and its tokenizer.json, GSM8K 4-shot prompts in Qwen's ChatML turn, value +
ORM critics on a Qwen2.5-0.5B-Instruct trunk, option-level eta-MCTS with
adaptive branching, state merge and fast rollouts, two rounds of
self-improvement on held-out train questions. Every value below overrides a
key of ``alphallm.schema`` (``schema.overridden``).

Why 1.5B and not 0.5B: both fit one GPU with a full AdamW fine-tune, but
the Qwen2.5 report gives GSM8K 73.2% for 1.5B-Instruct and 49.6% for
0.5B-Instruct (their prompts, not this config's; unverified here); 1.5B
is strong enough that search has good steps to find and weak enough to leave
room (the paper's Llama-2-70b starts at 57.8%). 0.5B is the critics' trunk:
it shares the tokenizer (and the 151936-row vocabulary), so the critics read
the policy's ids.

Setup (local files only; nothing is downloaded at run time)::

  # Once, on a machine with network access (or copy the directories over):
  huggingface-cli download Qwen/Qwen2.5-1.5B-Instruct --local-dir /data/Qwen2.5-1.5B-Instruct
  huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct --local-dir /data/Qwen2.5-0.5B-Instruct
  # GSM8K as train.jsonl / test.jsonl (the openai/grade-school-math files):
  export ALPHALLM_GSM8K_DIR=/data/gsm8k

  python -m alphallm.main --config=experiments/paper/qwen2_5_1_5b_gsm8k.py \\
      --config.model.checkpoint=/data/Qwen2.5-1.5B-Instruct \\
      --config.model.tokenizer=/data/Qwen2.5-1.5B-Instruct \\
      --config.critics.checkpoint=/data/Qwen2.5-0.5B-Instruct \\
      --workdir=/data/runs/qwen2_5_1_5b_gsm8k

Each checkpoint directory holds ``config.json``, ``model.safetensors`` and
``tokenizer.json`` + ``tokenizer_config.json`` (as downloaded). GSM8K is read
from ``$ALPHALLM_GSM8K_DIR``, else ``<repo>/../shared/data/gsm8k``, or from
``--config.task.knobs.data_dir=DIR --config.task.eval_knobs.data_dir=DIR``.
Print the memory plan below with ``python experiments/paper/qwen2_5_1_5b_gsm8k.py``.

Tokenizer: Qwen2.5-Instruct's ``tokenizer_config.json`` names ``<|im_end|>``
as EOS (the end of an assistant turn: generation stops there) and
``<|endoftext|>`` as PAD; it has no BOS, so ``alphallm.hf_tokenizer`` falls
back to EOS and every prompt starts with one ``<|im_end|>`` before
``<|im_start|>system`` (the library prepends ``bos_id``). The checkpoint's
151936 embedding rows are cut to the tokenizer's 151665 ids.

Memory (``alphallm.sharding``'s planner, printed by ``memory_plan()``; GB =
1e9 bytes). Qwen2.5-1.5B: P = 1,543,714,304 (+ 1,537 for the value head;
L=28, D=1536, 12 query / 2 kv heads of 128, F=8960, tied embeddings). The
plan prints (``python experiments/paper/qwen2_5_1_5b_gsm8k.py``)::

  policy_params: 1543715841
  policy_training_bytes: 24.70 GB (24,699,453,456 B)
  strategy: data_parallel
  remat_activation_bytes_per_row: 0.10 GB (99,090,432 B)
  critic_params: 494033665
  critic_training_bytes: 7.90 GB (7,904,538,640 B)
  search_weight_bytes: 3.09 GB (3,087,431,682 B)
  kv_bytes_per_token: 28672
  search_bytes_per_problem: {'nodes': '0.57 GB', 'prompt_kv': '0.02 GB',
                             'candidate_kv': '0.56 GB', 'rollout_kv': '0.09 GB',
                             'total': '1.24 GB'}
  search_bytes_batch: 9.90 GB (9,900,874,928 B)

That is:

* training state, AdamW with float32 master weights (16 B/param): 24.70 GB;
  ``sharding.choose_strategy`` on an 80 GB device: ``data_parallel`` (fits
  one GPU); activations with ``model.remat`` ~L x 2 D = 86 KB per token:
  0.10 GB per 1152-token row, 3.2 GB for the batch of 32;
* each critic (Qwen2.5-0.5B trunk, P = 494,032,768): 7.90 GB of training
  state, trained one after the other;
* search weights in bfloat16: 3.09 GB; KV cache 28,672 B (28 KiB) per token
  (2 x L x K x H x 2 B); one problem searched with the settings below
  (``sharding.search_memory_bytes``: 49 nodes keeping their 384-token paths,
  768 prompt slots, 16 candidate rows, 2 rollout rows) holds 1.24 GB: tree
  0.57 GB, prompt 0.02 GB, candidate sampling 0.56 GB, rollouts 0.09 GB.
  ``search_batch_size = 8``: 9.90 GB + 3.09 GB of weights.

Everything fits one 80 GB GPU (H100/A100-80GB) with room to spare; a 40-48 GB
GPU probably too with ``--config.loop.sft.batch_size=16`` (24.7 GB of state
plus activations; untested).

Expected time on one H100-80GB: an ESTIMATE (no GPU was available when this
config was written; time a few searches with ``benchmarks/search.py`` first
and rescale). Derived from sequential decode steps: a step of a 1.5B model
reads ~3.1 GB of bf16 weights, ~1 ms at the H100's 3.35 TB/s; this library's
unfused JAX decode (attention over the whole cache, one ``while_loop`` step
per token) is assumed ~10x slower, ~10 ms per step for a batch of up to a
few hundred rows. Every number below scales with that assumption.

* critics: 400 problems x 16 samples, 384-token cap, in batches of 128 rows:
  50 batches x 384 steps x 10 ms ~ 3 min; training the two 0.5B critics,
  2 x 6.4k rows x 1152 tokens x 6 x 0.5e9 FLOPs ~ 4.4e16 FLOPs ~ 3 min at
  an assumed 250 TFLOP/s;
* one eta-MCTS simulation of a batch of 8 problems: one line (<= 64 steps)
  plus 2 fast rollouts (~200 steps) ~ 300 sequential steps ~ 3 s, so 48
  simulations ~ 2.4 min per 8 problems;
* evaluation (greedy, self_consistency@16, eta-MCTS) on all 1319 test
  problems: eta-MCTS 165 batches x 2.4 min ~ 6.6 h, the others ~10 min;
  with ``--config.data.num_eval=256``: ~1.3 h;
* each round's search over 1000 held-out train questions: 125 batches x
  2.4 min ~ 5 h; SFT on the kept trajectories (<= 1000 x 3 epochs x ~900
  tokens x 6 x 1.54e9 FLOPs ~ 2.5e16 FLOPs) ~ 2 min.

Total: 3 evaluations (rounds 0, 1, 2) + 2 round searches ~ 3 x 6.6 + 2 x 5
~ 30 h; ~14 h with ``num_eval=256``. Halve ``search.num_simulations``
(Table 7: 55 rollouts gave 87.0%, 230 gave 88.9%) or ``loop.round_prompts``
to trade accuracy for time.
"""

import json
import math
import os
from collections.abc import Sequence

import ml_collections

from alphallm import schema

GSM8K_TEST = 1319
NUM_SHOTS = 4
NUM_SEEDS = 64               # the seed split; SFT data when sft.enabled
CRITIC_PROBLEMS = 400        # prompts of the critics' training trajectories
ROUND_PROMPTS = (1000, 1000)  # held-out train questions searched per round
PROMPT_SLOTS = 768           # 4-shot prompts: <= ~2.1k characters, ~560 Qwen tokens + ChatML
COMPLETION_SLOTS = 384       # the longest GSM8K solution is ~750 characters

# Qwen's default ChatML turn (as its chat_template renders one user message).
CHATML = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
          "assistant.<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n"
          "<|im_start|>assistant\n")

# Qwen/Qwen2.5-1.5B-Instruct's and -0.5B-Instruct's config.json (the keys the
# importer reads), for the memory plan without the checkpoints at hand.
QWEN25_15B_INSTRUCT = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
    "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
    "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 32768,
    "max_window_layers": 21, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 32768, "use_sliding_window": False, "tie_word_embeddings": True,
    "vocab_size": 151936, "bos_token_id": 151643, "eos_token_id": 151645,
    "torch_dtype": "bfloat16"}
QWEN25_05B_INSTRUCT = dict(
    QWEN25_15B_INSTRUCT, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
    num_attention_heads=14, num_key_value_heads=2, max_window_layers=24)

DEVICE_BYTES = 80e9          # one H100/A100-80GB


def _sft(steps: int, lr: float, end_lr: float, batch: int, epochs: float,
         warmup: int) -> dict:
  return dict(steps=steps, epochs=epochs, batch_size=batch, learning_rate=lr,
              end_learning_rate=end_lr, warmup_steps=warmup, weight_decay=0.0, grad_clip=1.0,
              value_coef=0.0, checkpoint_every=100, max_to_keep=2, log_every=10)


def overrides() -> dict:
  """The keys this config sets (a nested dict of ``alphallm.schema`` keys)."""
  gsm8k = dict(num_shots=NUM_SHOTS, shots_seed=0, prompt_format="plain",
               answer_line="sentence", calculator_annotations=False)
  return {
      "seed": 0,
      "num_devices": 1,
      "sharding": dict(strategy="data_parallel", mesh_shape=(1, "auto")),
      # 4-shot "Q: ... / The answer is N." inside the user turn; the reply is the solution.
      "task": dict(name="gsm8k", knobs=dict(gsm8k, split="train"),
                   eval_knobs=dict(gsm8k, split="test")),
      "data": dict(num_demos=NUM_SEEDS, num_eval=GSM8K_TEST,
                   seq_len=PROMPT_SLOTS + COMPLETION_SLOTS),
      "model": dict(checkpoint="/path/to/Qwen2.5-1.5B-Instruct",
                    tokenizer="/path/to/Qwen2.5-1.5B-Instruct", dtype="bfloat16",
                    param_dtype="float32", search_dtype="bfloat16", remat=True,
                    rollout_checkpoint="", prompt_wrapper=CHATML),
      # The instruct model is pi_0 (the paper starts from its policy without warm-start SFT).
      "sft": dict(_sft(10, 5e-6, 1e-6, 32, 3.0, 1), enabled=False),
      "critics": dict(
          kinds=("value", "orm"), checkpoint="/path/to/Qwen2.5-0.5B-Instruct",
          num_problems=CRITIC_PROBLEMS, num_calibration_problems=128,
          critic=dict(
              shared_trunk=False, model=dict(dtype="bfloat16", param_dtype="float32"),
              seq_len=PROMPT_SLOTS + COMPLETION_SLOTS,
              collect=dict(num_samples=16, temperature=1.0, max_new_tokens=COMPLETION_SLOTS,
                           mc_rollouts=0, batch_size=128),
              train=dict(steps=200, batch_size=32, learning_rate=1e-6, warmup_steps=0,
                         checkpoint_every=100))),
      # eta-MCTS: Table 5's "GSM8K small" (c 1.0, alpha 1, c_min(t>0) 2) with the
      # branching cut to one GPU (paper: c_max 60 / 10, c_min(0) 10) and 48 simulations
      # (Table 7: 55 rollouts 87.0%, 230 rollouts 88.9%).
      "search": dict(
          policy="puct", pb_c_init=1.0, dirichlet_fraction=0.0, granularity="option",
          num_simulations=48, num_actions=16, max_option_len=64,
          max_completion_len=COMPLETION_SLOTS, temperature=1.0, prior="count",
          adaptive_branching=dict(enabled=True, alpha=1.0, c_max_root=16, c_min_root=4,
                                  c_max=4, c_min=2),
          merge=dict(enabled=True, threshold=12),
          rollout=dict(enabled=True, num_rollouts=2, max_len=COMPLETION_SLOTS,
                       temperature=1.0),
          weights=dict(value=1.0, prm=0.0, orm=1.0), answer_selection="best_leaf"),
      "eval": dict(methods=("greedy", "self_consistency@16", "mcts"), batch_size=64,
                   search_batch_size=8, max_new_tokens=COMPLETION_SLOTS, temperature=1.0),
      "loop": dict(
          rounds=len(ROUND_PROMPTS), prompts_per_round=ROUND_PROMPTS[0],
          round_prompts=ROUND_PROMPTS, imagination_mix=dict(held_out=1.0),
          search_batch_size=8, select="best_leaf", filter_by="orm", gamma=0.5,
          cumulative=False, include_demos=False, distill=False,
          sft=_sft(100, 5e-6, 1e-6, 32, 3.0, 10)),
  }


def get_config() -> ml_collections.ConfigDict:
  return schema.overridden(overrides())


def memory_plan(device_bytes: float = DEVICE_BYTES) -> dict:
  """The numbers in the docstring, from ``alphallm.sharding``'s memory functions."""
  # pylint: disable=g-import-not-at-top
  from alphallm import hf_import, sharding
  c = get_config()
  policy = hf_import.config_from_hf(QWEN25_15B_INSTRUCT, dtype="bfloat16",
                                    param_dtype="float32")
  critic = hf_import.config_from_hf(QWEN25_05B_INSTRUCT, dtype="bfloat16",
                                    param_dtype="float32")
  p = policy.num_params()
  search = sharding.search_memory_bytes(policy, c.search, PROMPT_SLOTS, batch_size=1)
  return {
      "policy_params": p,
      "policy_training_bytes": sharding.training_bytes(p),
      "strategy": sharding.choose_strategy(p, int(device_bytes)),
      "remat_activation_bytes_per_row": 2 * policy.embed_dim * policy.num_layers
                                        * c.data.seq_len,
      "critic_params": critic.num_params(),
      "critic_training_bytes": sharding.training_bytes(critic.num_params()),
      "search_weight_bytes": 2 * p,
      "kv_bytes_per_token": sharding.kv_bytes_per_token(policy),
      "search_bytes_per_problem": search,
      "search_bytes_batch": c.loop.search_batch_size * search["total"],
  }


# ---------------------------------------------------------------------------
# The same architecture at toy scale, for CPU tests (tests/test_small_real_config.py).

# Qwen2.5-1.5B's family features, scaled down: GQA 6:1 (12 query / 2 kv heads),
# tied embeddings, q/k/v biases, rope_theta 1e6, no sliding window, and a
# checkpoint vocabulary padded beyond the tokenizer's.
TINY_QWEN = dict(hidden_size=96, intermediate_size=160, num_hidden_layers=2,
                 num_attention_heads=12, num_key_value_heads=2, max_window_layers=1)
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TINY_VOCAB_PADDING = 27   # as 151936 rows for 151665 ids, at toy scale


def write_tiny_tokenizer(directory: str, texts: Sequence[str], vocab_size: int = 400) -> None:
  """A byte-level BPE ``tokenizer.json`` with Qwen's special tokens, and its
  ``tokenizer_config.json`` as Qwen2.5-Instruct's (EOS ``<|im_end|>``, PAD
  ``<|endoftext|>``, no BOS)."""
  # pylint: disable-next=g-import-not-at-top
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(QWEN_SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(texts, trainer)
  os.makedirs(directory, exist_ok=True)
  tok.save(os.path.join(directory, "tokenizer.json"))
  with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump({"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
               "unk_token": None}, f, indent=2)


def write_tiny_checkpoint(directory: str, vocab_size: int, seed: int = 0,
                          dtype: str = "bfloat16") -> dict:
  """A random Qwen2.5-shaped HF checkpoint (``config.json`` + ``model.safetensors``).

  Weights ``N(0, 0.2)`` (norms ``1 + N(0, 0.1)``, wide enough for a stable
  greedy argmax), stored in ``dtype`` as Qwen's are. Returns the config written.
  """
  # pylint: disable=g-import-not-at-top
  import ml_dtypes  # noqa: F401  (numpy "bfloat16")
  import numpy as np
  from safetensors import numpy as safetensors_numpy
  from alphallm import hf_import
  hf = dict(QWEN25_15B_INSTRUCT, **TINY_QWEN, vocab_size=vocab_size, torch_dtype=dtype,
            bos_token_id=None, eos_token_id=None)
  config = hf_import.config_from_hf(hf)
  rng = np.random.default_rng(seed)
  tensors = {}
  for name, target in hf_import.tensor_plan(config).items():
    x = 0.2 * rng.standard_normal(target.hf_shape, dtype=np.float32)
    if name.endswith("norm.weight"):
      x = 1.0 + 0.5 * x
    tensors[name] = x.astype(np.dtype(dtype))
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2)
  safetensors_numpy.save_file(tensors, os.path.join(directory, "model.safetensors"))
  return hf


def write_tiny_qwen(directory: str, texts: Sequence[str], seed: int = 0) -> str:
  """Tokenizer + random Qwen2.5-shaped checkpoint in ``directory`` (an HF model dir)."""
  write_tiny_tokenizer(directory, texts)
  from alphallm import hf_tokenizer  # pylint: disable=g-import-not-at-top
  ids = hf_tokenizer.load_tokenizer(directory).vocab_size
  write_tiny_checkpoint(directory, vocab_size=8 * math.ceil(ids / 8) + TINY_VOCAB_PADDING,
                        seed=seed)
  return directory


if __name__ == "__main__":
  for key, value in memory_plan().items():
    if isinstance(value, dict):
      value = {k: f"{v / 1e9:.2f} GB" for k, v in value.items()}
    elif key.endswith("bytes") or key.endswith("_row") or key.endswith("batch"):
      value = f"{value / 1e9:.2f} GB ({value:,} B)"
    print(f"{key}: {value}")
