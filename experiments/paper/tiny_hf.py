"""The paper configs' code path at toy scale: an HF checkpoint, GSM8K, FSDP.

The same keys as ``gsm8k_llama2_70b.py`` (an HF checkpoint directory and a
tokenizer.json instead of a model built from scratch, the GSM8K task, FSDP
sharding), sized for a CPU: a random 2-layer Llama-shaped checkpoint and a
512-token byte-level BPE tokenizer trained on GSM8K questions. Accuracy is
~0; the point is that loading, sharding, SFT, critics and search run.

Write the checkpoint once (seconds; reads GSM8K's train split for the
tokenizer), then run::

  python -m experiments.paper.tiny_hf /tmp/alphallm_tiny_llama
  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
  python -m alphallm.main --config=experiments/paper/tiny_hf.py \\
      --config.model.checkpoint=/tmp/alphallm_tiny_llama \\
      --config.model.tokenizer=/tmp/alphallm_tiny_llama \\
      --workdir=/tmp/alphallm_tiny_hf

GSM8K is read from ``$ALPHALLM_GSM8K_DIR``, else ``<repo>/../shared/data/gsm8k``,
or from ``--config.task.knobs.data_dir=DIR --config.task.eval_knobs.data_dir=DIR``.

``XLA_FLAGS`` gives a CPU 8 devices, so the ``(2, -1)`` mesh below is (2, 4)
and really shards the parameters. It needs an even device count: on one
device pass ``--config.sharding.mesh_shape='(1, "auto")'``.

Round 0 starts from the checkpoint, fine-tunes it on 64 GSM8K train
problems (FSDP step), trains a fresh value critic on its samples and
evaluates greedy decoding and eta-MCTS on 16 test problems; round 1 searches
8 held-out train problems (GSM8K has no rule-based imagination:
``imagination_mix = dict(held_out=1.0)``), keeps the trajectories the critic
scores >= 0.5 and fine-tunes on them with the demonstrations. About 80 s on
a 2-core CPU, mostly compilation; a rerun in the same workdir resumes and
redoes nothing.
"""

import json
import math
import os
import sys
from collections.abc import Sequence

import ml_collections
from ml_collections import config_dict

from alphallm import schema

DEFAULT_CHECKPOINT = "/tmp/alphallm_tiny_llama"

# The random checkpoint: Llama-2's layout (untied, grouped-query attention) at toy size.
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
TOKENIZER_VOCAB = 512
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in Llama-2 (pad falls back to <unk>)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_devices = "auto"

  c.sharding = ml_collections.ConfigDict(dict(
      strategy="fsdp",      # the 70B configs' strategy, so this path is exercised
      mesh_shape=(2, "auto"),  # (data, fsdp): 2 replicas of a model split over the rest
      min_size=1024))       # tiny tensors: shard anything of >= 1024 elements

  c.task = ml_collections.ConfigDict()
  c.task.name = "gsm8k"
  # data_dir None: $ALPHALLM_GSM8K_DIR, else <repo>/../shared/data/gsm8k.
  c.task.knobs = ml_collections.ConfigDict(dict(
      data_dir=config_dict.placeholder(str), split="train", num_shots=0, shots_seed=0,
      prompt_format="plain", answer_line="prefix", calculator_annotations=False))
  # Evaluation problems come from the test split (same prompt format).
  c.task.eval_knobs = ml_collections.ConfigDict(dict(
      data_dir=config_dict.placeholder(str), split="test", num_shots=0, shots_seed=0,
      prompt_format="plain", answer_line="prefix", calculator_annotations=False))

  c.data = ml_collections.ConfigDict()
  c.data.num_demos = 64
  c.data.num_eval = 16
  c.data.seq_len = 512

  c.model = ml_collections.ConfigDict(dict(
      checkpoint=DEFAULT_CHECKPOINT,   # written by ``python -m experiments.paper.tiny_hf DIR``
      tokenizer=DEFAULT_CHECKPOINT,    # the same directory holds tokenizer.json
      dtype="float32", param_dtype="float32", search_dtype="float32",
      rollout_checkpoint=""))

  c.sft = ml_collections.ConfigDict(dict(
      steps=4, epochs=1, batch_size=8, learning_rate=1e-3, end_learning_rate=1e-4,
      warmup_steps=1, weight_decay=0.0, grad_clip=1.0, value_coef=0.0, checkpoint_every=2,
      max_to_keep=1, log_every=1))
  c.sft.enabled = True

  c.critics = ml_collections.ConfigDict()
  c.critics.kinds = ("value",)
  c.critics.checkpoint = ""            # "": a fresh critic built from critic.model
  c.critics.num_problems = 16
  c.critics.num_calibration_problems = 8
  c.critics.critic = schema.default_config().critics.critic
  c.critics.critic.seq_len = 512
  c.critics.critic.model = dict(num_layers=1, embed_dim=32, num_heads=2, num_kv_heads=1,
                                head_dim=16, mlp_dim=64)
  c.critics.critic.collect.num_samples = 2
  c.critics.critic.collect.mc_rollouts = 0
  c.critics.critic.collect.max_new_tokens = 32
  c.critics.critic.collect.batch_size = 16
  c.critics.critic.train.steps = 4
  c.critics.critic.train.batch_size = 8
  c.critics.critic.train.learning_rate = 1e-3
  c.critics.critic.train.checkpoint_every = 2

  # The 70B configs' search features (adaptive branching, merge, rollouts), tiny.
  c.search = schema.default_config().search
  c.search.policy = "puct"
  c.search.pb_c_init = 1.5
  c.search.dirichlet_fraction = 0.0
  c.search.num_simulations = 4
  c.search.num_actions = 3
  c.search.max_option_len = 16
  c.search.max_completion_len = 32
  c.search.adaptive_branching.enabled = True
  c.search.adaptive_branching.c_max_root = 3
  c.search.adaptive_branching.c_min_root = 2
  c.search.adaptive_branching.c_max = 2
  c.search.adaptive_branching.c_min = 1
  c.search.merge.enabled = True
  c.search.merge.threshold = 2
  c.search.rollout.enabled = True
  c.search.rollout.num_rollouts = 2
  c.search.rollout.max_len = 16
  c.search.answer_selection = "best_leaf"

  c.eval = ml_collections.ConfigDict(dict(
      methods=("greedy", "mcts"), batch_size=8, search_batch_size=8, max_new_tokens=32,
      temperature=1.0))

  c.loop = ml_collections.ConfigDict()
  c.loop.rounds = 1
  c.loop.prompts_per_round = 8
  c.loop.round_prompts = (8,)
  # GSM8K has no rule-based rewrites: train problems held out from every other phase.
  c.loop.imagination_mix = dict(held_out=1.0)
  c.loop.search_batch_size = 8
  c.loop.select = "best_leaf"
  c.loop.filter_by = "orm"
  c.loop.gamma = 0.5
  c.loop.cumulative = False
  c.loop.include_demos = True
  c.loop.distill = False
  c.loop.distill_weight = 1.0
  c.loop.sft = ml_collections.ConfigDict(dict(
      steps=2, epochs=1, batch_size=8, learning_rate=1e-3, end_learning_rate=1e-4,
      warmup_steps=0, weight_decay=0.0, grad_clip=1.0, value_coef=0.0, checkpoint_every=2,
      max_to_keep=1, log_every=1))
  return schema.overridden(c)


# ---------------------------------------------------------------------------
# The tiny checkpoint.


def _gsm8k_texts(data_dir: str | None, limit: int) -> list[str]:
  from alphallm.tasks import get_task  # pylint: disable=g-import-not-at-top
  task = get_task("gsm8k", data_dir=data_dir, split="train")
  problems = task.generate(0, min(limit, len(task)))
  return [task.prompt(p) + task.demonstration(p) for p in problems]


def write_tokenizer(directory: str, texts: Sequence[str], vocab_size: int = TOKENIZER_VOCAB
                    ) -> None:
  """A byte-level BPE ``tokenizer.json`` (+ ``tokenizer_config.json``) trained on ``texts``."""
  # pylint: disable-next=g-import-not-at-top
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[0]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(texts, trainer)
  os.makedirs(directory, exist_ok=True)
  tok.save(os.path.join(directory, "tokenizer.json"))
  with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump({"unk_token": SPECIAL_TOKENS[0], "bos_token": SPECIAL_TOKENS[1],
               "eos_token": SPECIAL_TOKENS[2]}, f, indent=2)


def write_checkpoint(directory: str, vocab_size: int, seed: int = 0, dtype: str = "bfloat16",
                     **overrides) -> dict:
  """A random Llama-shaped HF checkpoint (``config.json`` + ``model.safetensors``).

  Returns the HF config written. Weights are ``N(0, 0.02)`` (norms 1), in
  ``dtype`` as stored by HF (bf16 exercises the importer's conversion).
  """
  import ml_dtypes  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import numpy as np  # pylint: disable=g-import-not-at-top
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  from alphallm import hf_import  # pylint: disable=g-import-not-at-top

  hf = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab_size,
        "rms_norm_eps": 1e-5, "rope_theta": 10_000.0, "tie_word_embeddings": False,
        "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": dtype, **TINY_LLAMA, **overrides}
  config = hf_import.config_from_hf(hf)
  rng = np.random.default_rng(seed)
  tensors = {}
  for name, target in hf_import.tensor_plan(config).items():
    if name.endswith("norm.weight"):
      x = np.ones(target.hf_shape, np.float32)
    else:
      x = 0.02 * rng.standard_normal(target.hf_shape, dtype=np.float32)
    tensors[name] = x.astype(np.dtype(dtype))
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2)
  safetensors_numpy.save_file(tensors, os.path.join(directory, "model.safetensors"))
  return hf


def write_tiny_llama(directory: str = DEFAULT_CHECKPOINT, *, data_dir: str | None = None,
                     texts: Sequence[str] | None = None, seed: int = 0) -> str:
  """Tokenizer + random checkpoint in ``directory``; ``texts`` default: GSM8K train."""
  if texts is None:
    texts = _gsm8k_texts(data_dir, limit=2000)
  write_tokenizer(directory, texts)
  from alphallm import hf_tokenizer  # pylint: disable=g-import-not-at-top
  vocab = hf_tokenizer.load_tokenizer(directory).vocab_size
  # Pad the vocabulary to a multiple of 8 so the embedding divides any fsdp size <= 8.
  write_checkpoint(directory, vocab_size=int(math.ceil(vocab / 8) * 8), seed=seed)
  return directory


if __name__ == "__main__":
  if len(sys.argv) > 2:
    raise SystemExit(f"usage: python -m experiments.paper.tiny_hf [DIR (default "
                     f"{DEFAULT_CHECKPOINT})]")
  out = write_tiny_llama(sys.argv[1] if len(sys.argv) == 2 else DEFAULT_CHECKPOINT)
  print(f"wrote a tiny Llama checkpoint and tokenizer to {out}")
