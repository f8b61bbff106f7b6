"""Search quality: does eta-MCTS find more correct answers than sampling at equal compute?

On a dev split (generated with its own seed, disjoint from the run's eval
split and demonstrations: nothing here looks at the eval split), for a
trained quickstart workdir's round-0 policy and value critic:

* tree statistics of eta-MCTS at several simulation budgets (real nodes,
  nodes per simulation, distinct root children, revisit fraction, finished
  solutions, depth) and tree-contains-correct (computed after the search from
  the answer key, for reporting only);
* accuracy of eta-MCTS (its configured answer selection) against pass@N,
  self-consistency@N and critic re-rank@N at matched ``flops_per_problem``
  (``alphallm.decoding.flops``), with paired-bootstrap 95% intervals.

Usage::

  python -m benchmarks.search_quality --workdir /tmp/qs_base --out /tmp/sq.json \\
      --num_problems 64 --simulations 16,32,64,128

``--workdir`` is read only (the checkpoints are restored without writing).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from alphallm import critics as critics_lib
from alphallm import decoding
from alphallm import model as model_lib
from alphallm import sampling
from alphallm import tools
from alphallm.search import critic_slots
from alphallm.search import mcts
from alphallm.search import selection
from alphallm.tasks import Problem, get_task
from alphallm.tokenizer import CharTokenizer


def latest_step_dir(path: str) -> str:
  """The highest numbered step directory under ``path`` (or ``path`` if it is one)."""
  if os.path.isdir(os.path.join(path, "state")):
    return path
  steps = sorted((int(d) for d in os.listdir(path) if d.isdigit()), reverse=True)
  if not steps:
    raise ValueError(f"{path}: no checkpoint step directory")
  return os.path.join(path, str(steps[0]))


def restore_params(path: str):
  """The ``params`` of the latest orbax step under ``path`` (read only)."""
  state = ocp.StandardCheckpointer().restore(os.path.join(latest_step_dir(path), "state"))
  return state["params"]


def load_quickstart(workdir: str):
  """``(config dict, tokenizer, task, model_cfg, params, critic)`` of a quickstart workdir."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  tok = CharTokenizer()
  task = get_task(config["task"]["name"], **config["task"].get("knobs", {}))
  arch = {k: v for k, v in config["model"].items()
          if k in ("embed_dim", "head_dim", "mlp_dim", "num_heads", "num_kv_heads",
                   "num_layers", "rope_theta", "tie_embeddings", "dtype", "param_dtype")}
  model_cfg = model_lib.TransformerConfig.from_dict(
      {**arch, "vocab_size": tok.vocab_size, "max_len": config["data"]["seq_len"]})
  ckpts = os.path.join(workdir, "checkpoints")
  params = restore_params(os.path.join(ckpts, "sft_round0"))
  critic = None
  if os.path.isdir(os.path.join(ckpts, "critic_value")):
    cm = dict(config["critics"]["critic"]["model"])
    ccfg = model_lib.TransformerConfig.from_dict(
        {**arch, **cm, "vocab_size": tok.vocab_size,
         "max_len": max(config["critics"]["critic"]["seq_len"], 256)})
    critic = critics_lib.Critic("value", ccfg, restore_params(os.path.join(ckpts, "critic_value")),
                                shared_trunk=False)
  return config, tok, task, model_cfg, params, critic


def dev_problems(task, config: dict, num: int) -> list[Problem]:
  """``num`` problems from a dev seed stream, none in the run's eval split or demos."""
  from alphallm.tasks import make_splits  # pylint: disable=g-import-not-at-top
  seed = int(config.get("seed", 0))
  demos, evals = make_splits(task, seed, int(config["data"]["num_demos"]),
                             int(config["data"]["num_eval"]))
  taken = {p.question for p in demos} | {p.question for p in evals}
  out: list[Problem] = []
  for attempt in range(50):
    for p in task.generate(zlib.crc32(f"dev/{seed}/{attempt}".encode()) & 0x7FFFFFFF, num):
      if p.question not in taken:
        taken.add(p.question)
        out.append(p)
        if len(out) == num:
          return out
  raise ValueError(f"only {len(out)} dev problems outside eval/demos")


def tree_correct(task, tok, problems, out: mcts.SearchOutput) -> np.ndarray:
  """``[B]`` whether any finished node or kept rollout is correct (reporting only)."""
  t = selection.TreeArrays(out)
  e = out.tree.embeddings
  r_tok, r_len, r_fin = (np.asarray(e.rollout_tokens), np.asarray(e.rollout_len),
                         np.asarray(e.rollout_finished))
  res = []
  for b, prob in enumerate(problems):
    real = t.real(b)
    ok = False
    for n in range(real.shape[0]):
      if not real[n]:
        continue
      if t.terminal[b, n] and task.verify(prob, tok.decode(t.completion(b, n))):
        ok = True
        break
      if r_fin[b, n] and task.verify(prob, tok.decode(r_tok[b, n, :r_len[b, n]])):
        ok = True
        break
    res.append(ok)
  return np.asarray(res)


def search_settings(config: dict, simulations: int, **overrides) -> mcts.SearchConfig:
  """The workdir's search config at ``simulations``, with the on-demand defaults."""
  s = dict(config["search"])
  s.update(num_simulations=simulations, **overrides)
  known = {f for f in mcts.SearchConfig.__dataclass_fields__}
  return mcts.SearchConfig.from_config({k: v for k, v in s.items() if k in known})


def run_tree_stats(workdir: str, num_problems: int, sims: list[int], batch: int,
                   overrides: dict) -> dict:
  config, tok, task, model_cfg, params, critic = load_quickstart(workdir)
  problems = dev_problems(task, config, num_problems)
  calc = tools.make_calculator_critic(tok) if config["critics"].get("calculator") else None
  crit, crit_params = critic_slots.critic_slots(
      value=None, prm=critic, orm=critic, step_checker=calc)
  rows = []
  for n_sim in sims:
    sc = search_settings(config, n_sim, **overrides)
    search = mcts.make_search(model_cfg, sc, tok.eos_id, tok.token_ids_ending_with("\n"), crit,
                              answer_prefix_ids=tok.encode(task.answer_prefix), pad_id=tok.pad_id,
                              bos_id=tok.bos_id,
                              same_step_ignored_ids=mcts.same_step_token_ids(tok, task.same_step_ignored))
    stats, correct, t0 = [], [], time.time()
    for i in range(0, len(problems), batch):
      chunk = problems[i:i + batch]
      ids, mask = sampling.encode_prompts(tok, [task.prompt(p) for p in chunk])
      out = search(params, jnp.asarray(ids), jnp.asarray(mask),
                   jax.random.key(1000 + i), crit_params, None)
      stats.append(jax.device_get(out.stats))
      correct.append(tree_correct(task, tok, chunk, out))
    cat = lambda f: np.concatenate([np.asarray(getattr(s, f)) for s in stats])  # noqa: E731
    row = {"simulations": n_sim, "problems": len(problems), "seconds": time.time() - t0}
    for f in ("real_nodes", "distinct_root", "children_per_interior", "revisit_fraction",
              "finished", "max_depth"):
      row[f] = float(cat(f).mean())
    row["nodes_per_simulation"] = (row["real_nodes"] - 1) / n_sim
    row["tree_contains_correct"] = float(np.concatenate(correct).mean())
    print(json.dumps(row), flush=True)
    rows.append(row)
  return {"workdir": workdir, "overrides": overrides, "split": "dev", "tree_stats": rows}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--num_problems", type=int, default=64)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--simulations", default="32,128")
  ap.add_argument("--override", action="append", default=[],
                  help="search key=value (JSON value), e.g. policy=\"uct\"")
  args = ap.parse_args(argv)
  overrides = {}
  for item in args.override:
    key, _, value = item.partition("=")
    overrides[key] = json.loads(value)
  res = run_tree_stats(args.workdir, args.num_problems,
                       [int(s) for s in args.simulations.split(",")], args.batch, overrides)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=2)


if __name__ == "__main__":
  main()
