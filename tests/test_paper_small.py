"""``python -m alphallm.paper_small --quick``: tables, rows and plots."""

import dataclasses
import json
import os

from alphallm import paper_small
from alphallm import results as results_lib


def test_quick_writes_tables_rows_and_plots(tmp_path):
  workdir = str(tmp_path / "paper_small")
  paper_small.main([f"--workdir={workdir}", "--quick", "--seeds=3,4"])
  obj = json.load(open(os.path.join(workdir, "results.json")))
  rows = obj["rows"]
  for r in rows:
    results_lib.validate_row(r)
    assert r["seed"] == 3 and 0.0 <= r["accuracy"] <= 1.0
    assert r["table"] == paper_small.table_of(r["decoding"])
  names = {(r["round"], r["decoding"]) for r in rows}
  assert {(k, m) for k in (0, 1, 2) for m in ("greedy", "mcts")} <= names
  assert (2, "sft_demos_greedy") in names
  assert {(0, "t3/vanilla"), (0, "t3/option_level_tool"), (0, "t7/greedy"),
          (0, "t7/self_consistency@2"), (0, "t7/orm_rerank@2"), (0, "t7/mcts@2")} <= names
  assert len(obj["aggregate"]) == len(names)
  for a in obj["aggregate"]:
    assert a["seeds"] == [3] and a["accuracy_std"] == 0.0
  md = open(os.path.join(workdir, "results.md")).read()
  for heading in ("## Table 2", "## Table 3", "## Table 7"):
    assert heading in md
  assert "| orm_rerank@2 |" in md and "88.9" in md
  for name in (paper_small.ROUND_PLOT, paper_small.COMPUTE_PLOT):
    with open(os.path.join(workdir, paper_small.PLOTS_DIR, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_aggregate_mean_and_std_over_seeds():
  rows = [{"table": "table2", "decoding": "greedy", "round": 0, "accuracy": a, "seed": s,
           "num_problems": 4, "forward_passes_per_problem": 10.0, "tokens_per_problem": 9.0}
          for s, a in ((0, 0.25), (1, 0.75))]
  (a,) = paper_small.aggregate(rows)
  assert a["accuracy_mean"] == 0.5 and abs(a["accuracy_std"] - 0.3535534) < 1e-6
  assert a["seeds"] == [0, 1]


def test_tables_subset_keeps_the_first_eval_problems():
  @dataclasses.dataclass
  class Ctx:
    eval_problems: list

  ctx = Ctx(list(range(10)))
  assert paper_small._subset(ctx, 4).eval_problems == [0, 1, 2, 3]  # pylint: disable=protected-access
  assert paper_small._subset(ctx, 0) is ctx and paper_small._subset(ctx, 20) is ctx  # pylint: disable=protected-access
