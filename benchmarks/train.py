"""Training-step throughput and model FLOP utilisation, against a dense matmul.

Measures, in one run on this machine:

* the real jit-compiled data-parallel SFT step (``alphallm.train.make_train_step``
  over ``data_mesh()`` of all local devices) on a small Llama-shaped config:
  seconds per step and real (non-pad) tokens per second;
* model FLOPs per step, analytic (formula in the JSON) and, as a cross-check,
  XLA's own cost analysis of the compiled step;
* float32 matmul FLOP/s of a model-shaped matmul ``[B*T, D] x [D, F]`` and of a
  large square one; the square one is the reference "peak" for
  ``mfu_vs_matmul = achieved model FLOP/s / square-matmul FLOP/s``.

Every timed function is compiled and run untimed first, each timed call ends in
``block_until_ready``, and the figures are medians over repeats. The repeats of
the step and of the matmuls are interleaved, so that background load on a
shared machine affects all of them alike.

Usage::

  PYTHONPATH=. python benchmarks/train.py --out /tmp/bench_train.json [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from alphallm import model as model_lib
from alphallm import train as train_lib
from alphallm.tokenizer import BOS_ID, EOS_ID, PAD_ID, CharTokenizer
from benchmarks import common

# Small Llama-shaped config (GQA, SwiGLU, RMSNorm, RoPE, tied embeddings); the
# vocabulary is the project's character tokenizer's.
FULL = dict(num_layers=4, embed_dim=256, num_heads=8, num_kv_heads=4, head_dim=32,
            mlp_dim=1024, seq_len=128, batch_size=32)
QUICK = dict(num_layers=2, embed_dim=64, num_heads=4, num_kv_heads=2, head_dim=16,
             mlp_dim=256, seq_len=32, batch_size=8)

SQUARE_MATMUL_N = 2048

FLOPS_FORMULA = (
    "model_flops_per_step = 6 * N_matmul * B * T + 12 * L * (N*H) * T^2 * B, where "
    "N_matmul = L * (D*N*H + 2*D*K*H + N*H*D + 3*D*F) + D*V + D (every weight used in a "
    "matmul: attention and SwiGLU projections, the tied unembedding, the value head; the "
    "embedding lookup is a gather and norm scales are elementwise, so both are excluded), "
    "and the second term is QK^T and PV over the full T x T score matrix (the causal mask "
    "is applied by masking, not skipped), forward + backward = 3x forward. B*T counts every "
    "position, pad included, since the step computes on pads too. Optimizer (AdamW), "
    "softmax, norms and RoPE are not counted.")


def analytic_flops(config: model_lib.TransformerConfig, batch_size: int, seq_len: int
                   ) -> dict[str, float]:
  """Model FLOPs of one training step (forward + backward), see FLOPS_FORMULA."""
  d, n, k, h, f, v, l = (config.embed_dim, config.num_heads, config.num_kv_heads,
                         config.head_dim, config.mlp_dim, config.vocab_size, config.num_layers)
  n_matmul = l * (d * n * h + 2 * d * k * h + n * h * d + 3 * d * f) + d * v + d
  positions = batch_size * seq_len
  dense = 6 * n_matmul * positions
  attention = 12 * l * (n * h) * seq_len ** 2 * batch_size
  return {"n_matmul_params": n_matmul, "dense_flops": float(dense),
          "attention_flops": float(attention), "total": float(dense + attention)}


def make_batch(vocab_size: int, batch_size: int, seq_len: int, min_fill: float,
               seed: int = 0) -> dict[str, np.ndarray]:
  """Random right-padded rows: BOS then random ids, lengths in [min_fill*T, T].

  ``loss_mask`` is 1 on every real position after BOS (the step's cost does not
  depend on which positions are targets).
  """
  rng = np.random.default_rng(seed)
  low = max(2, math.ceil(min_fill * seq_len))
  lengths = rng.integers(low, seq_len + 1, size=batch_size)
  tokens = np.full((batch_size, seq_len), PAD_ID, np.int32)
  loss_mask = np.zeros((batch_size, seq_len), np.float32)
  first_id = max(PAD_ID, BOS_ID, EOS_ID) + 1
  for i, length in enumerate(lengths):
    tokens[i, 0] = BOS_ID
    tokens[i, 1:length] = rng.integers(first_id, vocab_size, size=length - 1)
    loss_mask[i, 1:length] = 1.0
  return {"tokens": tokens, "loss_mask": loss_mask}


def xla_cost(compiled) -> dict[str, float] | None:
  """``flops``/``transcendentals``/``bytes accessed`` of a compiled executable, if any."""
  try:
    cost = compiled.cost_analysis()
  except Exception as e:  # pylint: disable=broad-except
    return {"error": f"{type(e).__name__}: {e}"}
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else None
  if not cost:
    return None
  keys = ("flops", "transcendentals", "bytes accessed")
  return {k: float(cost[k]) for k in keys if k in cost}


def make_matmul(m: int, k: int, n: int) -> tuple[Any, float, str]:
  """A jitted float32 ``[m, k] x [k, n]`` on the default device, its FLOPs and shape."""
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (m, k), jnp.float32)
  b = jax.random.normal(kb, (k, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  return (lambda: matmul(a, b)), 2.0 * m * k * n, f"[{m}, {k}] x [{k}, {n}]"


def setup_train_step(config: model_lib.TransformerConfig, batch_size: int, seq_len: int,
                     min_fill: float) -> dict[str, Any]:
  """The real data-parallel step, ready to time; also XLA's cost analysis of it."""
  mesh = train_lib.data_mesh()
  num_devices = mesh.shape[train_lib.DATA_AXIS]
  if batch_size % num_devices:
    raise ValueError(f"batch size {batch_size} is not divisible by the {num_devices} devices")
  optimizer = train_lib.make_optimizer(1e-3, total_steps=10_000, warmup_steps=10)
  params = model_lib.init_params(config, jax.random.key(0))
  state = train_lib.replicate(train_lib.init_train_state(params, optimizer, seed=0), mesh)
  host_batch = make_batch(config.vocab_size, batch_size, seq_len, min_fill)
  batch = train_lib.shard_batch(host_batch, mesh)
  step = train_lib.make_train_step(config, optimizer, mesh)

  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  cost = xla_cost(compiled)
  del compiled

  holder = {"state": state, "metrics": None}

  def run_step():
    # The state is donated: thread it through, as a training loop does.
    holder["state"], holder["metrics"] = step(holder["state"], batch)
    return holder["state"], holder["metrics"]

  t0 = time.perf_counter()
  jax.block_until_ready(run_step())  # first call through jit's own dispatch path
  first_call_s = time.perf_counter() - t0
  initial_loss = float(holder["metrics"]["loss"])
  return {"run_step": run_step, "holder": holder, "num_devices": num_devices,
          "compile_s": compile_s, "first_call_s": first_call_s, "xla_cost_per_device": cost,
          "initial_loss": initial_loss,
          "real_tokens_per_step": int((host_batch["tokens"] != PAD_ID).sum()),
          "positions_per_step": batch_size * seq_len}


def main(argv=None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="JSON file to write")
  parser.add_argument("--quick", action="store_true", help="a much smaller config")
  parser.add_argument("--repeats", type=int, default=None,
                      help="timed repeats (default 10, quick 5)")
  parser.add_argument("--warmup", type=int, default=2,
                      help="untimed calls of each timed function (after compiling)")
  parser.add_argument("--min-fill", type=float, default=1.0,
                      help="row lengths are uniform in [min_fill*T, T]; 1.0 = no padding")
  args = parser.parse_args(argv)
  if not 0.0 < args.min_fill <= 1.0:
    parser.error("--min-fill must be in (0, 1]")

  sizes = dict(QUICK if args.quick else FULL)
  repeats = args.repeats or (5 if args.quick else 10)
  batch_size, seq_len = sizes.pop("batch_size"), sizes.pop("seq_len")
  config = model_lib.TransformerConfig(vocab_size=CharTokenizer().vocab_size, max_len=seq_len,
                                       **sizes)

  t_start = time.perf_counter()
  load_before = common.load_average()
  train = setup_train_step(config, batch_size, seq_len, args.min_fill)
  ndev = train["num_devices"]
  flops = analytic_flops(config, batch_size, seq_len)
  # The matmuls run on one device; the model-shaped one has a device's rows.
  mm_model, mm_model_flops, mm_model_shape = make_matmul(
      batch_size // ndev * seq_len, config.embed_dim, config.mlp_dim)
  mm_square, mm_square_flops, mm_square_shape = make_matmul(
      SQUARE_MATMUL_N, SQUARE_MATMUL_N, SQUARE_MATMUL_N)
  # Interleaved so that background load on a shared machine hits all three alike.
  timings = common.time_interleaved(
      {"train_step": (train["run_step"], 0.2), "matmul_model_shaped": (mm_model, 0.2),
       "matmul_square": (mm_square, 0.2)},
      warmup=args.warmup, repeats=repeats)
  load_after = common.load_average()
  holder = train["holder"]
  steps_run = int(jax.device_get(holder["state"].step))
  metrics = jax.device_get(holder["metrics"])
  train_lib.check_finite(metrics, steps_run)

  step_time = timings["train_step"]["median_s"]
  achieved = flops["total"] / step_time
  square_flops_per_s = mm_square_flops / timings["matmul_square"]["median_s"]
  model_shaped_flops_per_s = mm_model_flops / timings["matmul_model_shaped"]["median_s"]
  # Reference for N devices: N times one device's square-matmul FLOP/s.
  peak = square_flops_per_s * ndev
  paired_mfu = [(flops["total"] / ts) / (mm_square_flops / tm * ndev) for ts, tm in zip(
      timings["train_step"]["times_s"], timings["matmul_square"]["times_s"])]
  xla = train["xla_cost_per_device"] or {}
  xla_total = xla["flops"] * ndev if "flops" in xla else None
  env = common.environment()

  result = {
      "tokens_per_s": train["real_tokens_per_step"] / step_time,
      "step_time_s": step_time,
      "model_flops_per_step": flops["total"],
      "achieved_flops_per_s": achieved,
      "matmul_flops_per_s": {"square": square_flops_per_s,
                             "model_shaped": model_shaped_flops_per_s},
      "mfu_vs_matmul": achieved / peak,
      "config": {**dataclasses.asdict(config), "batch_size": batch_size, "seq_len": seq_len,
                 "min_fill": args.min_fill, "num_params": config.num_params(),
                 "n_matmul_params": flops["n_matmul_params"], "quick": args.quick},
      "devices": env["devices"],
      "jax_version": env["jax_version"],
      "notes": (
          "Real jitted shard_map data-parallel SFT step (AdamW, grad clipping) on "
          f"data_mesh() of {ndev} device(s), float32. tokens_per_s counts non-pad tokens; "
          "model FLOPs count every position (formula in details.flops_formula). "
          "mfu_vs_matmul = achieved_flops_per_s / (num_devices * matmul_flops_per_s.square), "
          "a float32 matmul measured in this run, not a vendor peak. Medians over repeats "
          "after compile + warm-up; step and matmul repeats interleaved. Timings on a shared "
          "machine: see details.load_average."),
      "details": {
          "flops_formula": FLOPS_FORMULA,
          "analytic_flops": flops,
          "xla_cost_analysis": {
              "per_device": train["xla_cost_per_device"],
              "flops_all_devices": xla_total,
              "ratio_to_analytic": None if xla_total is None else xla_total / flops["total"],
              "note": ("XLA's HLO cost analysis of the compiled step (per-device program, "
                       "times num_devices). It also counts elementwise ops (softmax, norms, "
                       "RoPE, AdamW) as FLOPs, so it should somewhat exceed the analytic "
                       "count."),
          },
          "mfu_vs_model_shaped_matmul": achieved / (model_shaped_flops_per_s * ndev),
          "mfu_vs_matmul_paired_median": statistics.median(paired_mfu),
          "mfu_vs_matmul_paired": paired_mfu,
          "positions_per_s": train["positions_per_step"] / step_time,
          "real_tokens_per_step": train["real_tokens_per_step"],
          "positions_per_step": train["positions_per_step"],
          "compile_s": train["compile_s"],
          "first_call_s": train["first_call_s"],
          "steps_run": steps_run,
          "initial_loss": train["initial_loss"],
          "final_loss": float(metrics["loss"]),
          "timings": timings,
          "matmul_shapes": {"model_shaped": mm_model_shape, "square": mm_square_shape},
          "load_average": {"before": load_before, "after": load_after},
          "environment": env,
          "wall_s": time.perf_counter() - t_start,
      },
  }
  common.write_json(args.out, result)
  print(json.dumps(result, indent=2))
  return result


if __name__ == "__main__":
  main()
