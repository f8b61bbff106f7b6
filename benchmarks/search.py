"""Benchmarks of the jitted, batched eta-MCTS on CPU (one tiny model, one set of problems).

Usage::

  PYTHONPATH=. python benchmarks/search.py [--quick] [--out FILE]

Figures (printed as JSON, and written to ``--out``):

* ``sims_per_s``: problem-simulations per second of the jitted search
  (``B * num_simulations / wall time``), option level, Gumbel MuZero.
* ``ratio_vs_python_mcts``: problem-simulations per second of the jitted search
  / that of the straightforward Python MCTS of ``benchmarks/python_mcts.py``
  (tree in Python objects, one tree per problem, one jitted model call per
  expansion doing the same work), same model and problems, same algorithm
  (PUCT as in mctx, no root noise; ``puct_sims_per_s``). A simulation that
  revisits a terminal leaf costs the Python search nothing, so
  ``ratio_vs_python_mcts_expansions`` also compares expanded nodes per second.
* ``ratio_vs_recompute``: wall time of the search with ``recompute_prefix``
  (every expansion re-encodes prompt + path) / with KV reuse, whole searches at
  a context of >= 256 tokens (few-shot prompts), token level (an expansion is
  then one model call, so this isolates prefix re-encoding vs KV reuse).
  ``ratio_vs_recompute_option`` is the same at option level, where both modes
  also sample ``A`` candidate options per expansion.
* ``overhead_vs_decode``: wall time of the search / wall time of the same
  number of sequential model calls (``SearchOutput.model_calls``) made as plain
  batched incremental decode steps (sample a token, one model call) of
  ``B * A`` rows over a KV cache of the search's length ``P + C + O``. It is
  what the tree (selection, backup, node gathers/scatters, cache assembly,
  merge, priors) adds on top of the model calls themselves.
* ``sims_per_s_by_batch``: ``sims_per_s`` at several batch sizes B (on CPU a
  model call's cost grows about linearly with its rows, so batching problems
  mostly amortises per-call overhead).
* ``bytes_per_node``: bytes a tree node costs (``mcts.bytes_per_node``), and the
  measured tree bytes / nodes.

Compile time is excluded (each function runs once before timing); each figure
is the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from alphallm import model as model_lib
from alphallm import sampling
from alphallm import testing
from alphallm.search import mcts
from alphallm.tasks import get_task
from alphallm.tokenizer import CharTokenizer
from benchmarks import python_mcts


def _timed(fn, repeats: int) -> float:
  jax.block_until_ready(fn())                      # compile / warm up
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _search_config(**kw):
  sc = mcts.default_search_config()
  for k, v in kw.items():
    sc[k] = v
  return sc


def few_shot_prompts(task, tok, problems, min_tokens: int) -> list[str]:
  """Prompts of >= ``min_tokens`` characters: demonstrations, then the question."""
  demos = task.generate(seed=123, num=64)
  shots = ""
  i = 0
  while len(shots) < min_tokens:
    d = demos[i % len(demos)]
    shots += task.prompt(d) + task.demonstration(d) + "\n"
    i += 1
  return [shots + task.prompt(p) for p in problems]


def decode_steps_fn(config, rows: int, slots: int, option_len: int):
  """``n`` plain incremental decode steps of ``rows`` rows over a ``slots``-slot cache."""
  model = model_lib.Transformer(config)

  @jax.jit
  def run(params, n, rng):
    cache = model_lib.KVCache.init(config, rows, slots)
    cache = cache.replace(mask=jnp.ones_like(cache.mask))
    base = slots - option_len

    def body(i, state):
      cache, logits, rng = state
      rng, key = jax.random.split(rng)
      tok = sampling.sample_logits(key, logits, jnp.float32(1.0))
      slot = jnp.full((rows,), base) + i % option_len
      out = model.apply({"params": params}, tok[:, None], slot[:, None],
                        jnp.ones((rows, 1), bool), cache, slot)
      return out.cache, out.logits[:, -1], rng

    init = (cache, jnp.zeros((rows, config.vocab_size), jnp.float32), rng)
    return jax.lax.fori_loop(0, n, body, init)[1]

  return run


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
  ap.add_argument("--out", default=None, help="write the JSON here")
  ap.add_argument("--repeats", type=int, default=None)
  args = ap.parse_args()
  q = args.quick
  b = 8 if q else 32
  sims = 8 if q else 32
  a, o, c = 4, 8, 32
  repeats = args.repeats or (2 if q else 3)
  py_problems = 4 if q else b

  tok = CharTokenizer()
  task = get_task("arithmetic")
  problems = task.generate(seed=0, num=b)
  config = testing.tiny_config(max_len=512)
  params = testing.random_params(config, scale=0.3)
  delim = tok.token_ids_ending_with(task.step_delimiter)
  ids, mask = sampling.encode_prompts(tok, [task.prompt(p) for p in problems])
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  rng = jax.random.key(0)
  results: dict = {"mode": "quick" if q else "full", "device": jax.devices()[0].device_kind,
                   "problems": b, "num_simulations": sims, "num_actions": a,
                   "max_option_len": o, "max_completion_len": c, "prompt_slots": int(ids.shape[1]),
                   "model": {"num_layers": config.num_layers, "embed_dim": config.embed_dim,
                             "params": config.num_params()}}

  # 1. The jitted batched search.
  sc = _search_config(num_simulations=sims, num_actions=a, max_option_len=o,
                      max_completion_len=c)
  search = mcts.make_search(config, sc, tok.eos_id, delim, answer_prefix_ids=tok.encode("A: "))
  t_search = _timed(lambda: search(params, ids, mask, rng), repeats)
  out = search(params, ids, mask, rng)
  sims_per_s = b * sims / t_search
  results.update(search_s=t_search, sims_per_s=sims_per_s,
                 forward_passes_per_problem=float(np.mean(out.forward_passes)),
                 tokens_per_problem=float(np.mean(out.tokens)),
                 model_calls=int(out.model_calls))

  # 1b. Batch scaling: problem-simulations per second against the batch size.
  scaling = {}
  for bb in ((1, 4) if q else (1, 4, 16)):
    s_b = mcts.make_search(config, sc, tok.eos_id, delim, answer_prefix_ids=tok.encode("A: "))
    t_b = _timed(lambda s_b=s_b, bb=bb: s_b(params, ids[:bb], mask[:bb], rng), repeats)
    scaling[bb] = bb * sims / t_b
  scaling[b] = sims_per_s
  results["sims_per_s_by_batch"] = scaling

  # 2. The Python MCTS on the same model and problems, against the same algorithm
  # (PUCT as mctx, no root noise) in the jitted search.
  puct_cfg = _search_config(num_simulations=sims, num_actions=a, max_option_len=o,
                            max_completion_len=c, policy="puct", dirichlet_fraction=0.0)
  puct = mcts.make_search(config, puct_cfg, tok.eos_id, delim)
  t_puct = _timed(lambda: puct(params, ids, mask, rng), repeats)
  puct_out = puct(params, ids, mask, rng)
  py = python_mcts.PythonMCTS(config, params, num_actions=a, max_option_len=o,
                              max_completion_len=c, eos_id=tok.eos_id, delimiter_ids=delim,
                              pb_c_init=puct_cfg.pb_c_init, pb_c_base=puct_cfg.pb_c_base)
  py.search(ids[:1], mask[:1], 2, rng)            # compile
  py.expansions = 0
  t = time.perf_counter()
  for i in range(py_problems):
    py.search(ids[i:i + 1], mask[i:i + 1], sims, jax.random.key(i))
  t_py = time.perf_counter() - t
  py_sims_per_s = py_problems * sims / t_py
  py_exp_per_s = py.expansions / t_py
  puct_sims_per_s = b * sims / t_puct
  puct_exp_per_s = float(np.sum(puct_out.rollouts)) / t_puct
  results.update(
      puct_sims_per_s=puct_sims_per_s, puct_expansions_per_s=puct_exp_per_s,
      python_mcts_problems=py_problems, python_mcts_sims_per_s=py_sims_per_s,
      python_mcts_expansions_per_s=py_exp_per_s,
      python_mcts_expansions_per_problem=py.expansions / py_problems,
      puct_expansions_per_problem=float(np.mean(puct_out.rollouts)),
      ratio_vs_python_mcts=puct_sims_per_s / py_sims_per_s,
      ratio_vs_python_mcts_expansions=puct_exp_per_s / py_exp_per_s)

  # 3. KV reuse vs re-encoding the prefix, at >= 256 tokens of context.
  long_text = few_shot_prompts(task, tok, problems, 256 - c)
  lids, lmask = sampling.encode_prompts(tok, long_text)
  lids, lmask = jnp.asarray(lids), jnp.asarray(lmask)
  results["recompute_context_tokens"] = int(lids.shape[1]) + c
  for name, gran in (("ratio_vs_recompute", "token"), ("ratio_vs_recompute_option", "option")):
    times = {}
    for recompute in (False, True):
      cfg = _search_config(num_simulations=sims, num_actions=a, max_option_len=o,
                           max_completion_len=c, granularity=gran, recompute_prefix=recompute)
      s = mcts.make_search(config, cfg, tok.eos_id, delim)
      times[recompute] = _timed(lambda s=s: s(params, lids, lmask, rng), repeats)
    results[name] = times[True] / times[False]
    results[f"{name}_s"] = {"kv_reuse": times[False], "recompute": times[True]}

  # 4. Overhead of the tree over plain decode steps.
  calls = int(out.model_calls)
  decode = decode_steps_fn(config, b * a, int(ids.shape[1]) + c + o, o)
  t_decode = _timed(lambda: decode(params, calls, rng), repeats)
  results.update(overhead_vs_decode=t_search / t_decode, decode_s=t_decode,
                 overhead_definition=(
                     "search wall time / wall time of model_calls sequential plain decode steps "
                     f"(B*A={b * a} rows, cache of P+C+O={int(ids.shape[1]) + c + o} slots)"))

  # 5. Memory per node.
  per_node = mcts.bytes_per_node(config, sc)
  leaves = jax.tree.leaves(out.tree)
  nodes = b * (sims + 1)
  results.update(bytes_per_node=per_node["total"], bytes_per_node_detail=per_node,
                 measured_tree_bytes_per_node=sum(x.nbytes for x in leaves) / nodes,
                 prompt_kv_bytes_per_problem=2 * config.num_layers * int(ids.shape[1])
                 * config.num_kv_heads * config.head_dim * 4)

  text = json.dumps(results, indent=2)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
