"""Quickstart: warm-start a tiny policy on multi-step arithmetic and evaluate it.

Run (about 1.5 minutes on a 2-core CPU):

  python -m alphallm.main --config=experiments/quickstart.py --workdir=/tmp/alphallm_quickstart

The demonstration set is deliberately small and the SFT short, so that
greedy accuracy lands well below 100% and leaves room for search and
self-improvement to show real gains.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_devices = 0  # 0: all local devices (data-parallel SFT step).

  c.task = ml_collections.ConfigDict()
  c.task.name = "arithmetic"
  c.task.knobs = ml_collections.ConfigDict(
      dict(min_ops=2, max_ops=4, max_operand=9, ops="+-*", max_value=99))

  c.data = ml_collections.ConfigDict()
  c.data.num_demos = 500      # small on purpose: an imperfect warm start
  c.data.num_eval = 256       # held-out problems, disjoint from every train split
  c.data.seq_len = 64

  c.model = ml_collections.ConfigDict(dict(
      num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=192,
      rope_theta=10_000.0, tie_embeddings=True, dtype="float32", param_dtype="float32"))

  c.sft = ml_collections.ConfigDict(dict(
      steps=1000, batch_size=32, learning_rate=3e-3, warmup_steps=20, weight_decay=0.01,
      grad_clip=1.0, value_coef=0.0, checkpoint_every=250, max_to_keep=2))

  c.eval = ml_collections.ConfigDict(dict(
      methods=("greedy", "sampling", "self_consistency@8", "best_of@8"),
      batch_size=64, max_new_tokens=40, temperature=1.0))
  return c
