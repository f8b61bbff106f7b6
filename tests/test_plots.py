"""``alphallm.plots``: PNGs from ``results.json`` and the Plots section of ``results.md``."""

import json
import math
import os

import pytest

pytest.importorskip("matplotlib")

from alphallm import plots  # noqa: E402  (after the skip)
from alphallm import results as results_lib  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(decoding, round_, accuracy, fwd, seed=0, task="arithmetic"):
  return {"task": task, "round": round_, "decoding": decoding, "accuracy": accuracy,
          "num_problems": 16, "forward_passes_per_problem": fwd, "tokens_per_problem": fwd - 1,
          "rollouts_per_problem": 1.0, "seed": seed}


def _workdir(tmp_path, rows):
  """A workdir as a run leaves it: rows added through ``Results`` (results.json + .md)."""
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  res = results_lib.Results(workdir)
  for r in rows:
    res.add(r)
  return workdir


def _multi_rows():
  rows = []
  for seed in (0, 1, 2):
    for round_ in (0, 1, 2):
      gain = 0.05 * round_ + 0.01 * seed
      rows += [_row("greedy", round_, 0.3 + gain, 25.0, seed),
               _row("self_consistency@4", round_, 0.4 + gain, 90.0 + seed, seed),
               _row("self_consistency@16", round_, 0.45 + gain, 350.0 + seed, seed),
               _row("mcts", round_, 0.6 + gain, 240.0 + 3 * seed, seed)]
  return rows + [_row("greedy", 0, 0.1, 30.0, 0, task="countdown")]


def _assert_png(path):
  with open(path, "rb") as f:
    data = f.read()
  assert data.startswith(PNG_MAGIC), path
  # IHDR: width and height (big-endian) of a real image.
  width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
  assert width > 100 and height > 100
  assert data.rstrip().endswith(b"IEND\xaeB`\x82")


def test_write_plots_pngs_and_links(tmp_path):
  workdir = _workdir(tmp_path, _multi_rows())
  paths = plots.write_plots(workdir)
  assert [os.path.basename(p) for p in paths] == [plots.ACCURACY_VS_ROUND,
                                                  plots.ACCURACY_VS_COMPUTE]
  for p in paths:
    assert os.path.dirname(p) == os.path.join(workdir, "plots")
    _assert_png(p)
  md = open(os.path.join(workdir, "results.md"), encoding="utf-8").read()
  assert md.startswith("# Results")
  assert "| arithmetic | 2 | mcts |" in md  # the table is kept
  assert md.count("## Plots") == 1
  assert "![accuracy vs round](plots/accuracy_vs_round.png)" in md
  assert "![accuracy vs compute](plots/accuracy_vs_compute.png)" in md
  # No temporary files are left behind.
  assert sorted(os.listdir(os.path.join(workdir, "plots"))) == sorted(
      [plots.ACCURACY_VS_ROUND, plots.ACCURACY_VS_COMPUTE])


def test_write_plots_is_idempotent_and_survives_results_rewrite(tmp_path):
  workdir = _workdir(tmp_path, _multi_rows())
  md_path = os.path.join(workdir, "results.md")
  first = plots.write_plots(workdir)
  md1 = open(md_path, encoding="utf-8").read()
  second = plots.write_plots(workdir)
  assert first == second
  assert open(md_path, encoding="utf-8").read() == md1
  # A hand-written section after the plots survives; the plots are not duplicated.
  with open(md_path, "a", encoding="utf-8") as f:
    f.write("\n## Notes\n\nkeep me\n")
  plots.write_plots(workdir)
  md = open(md_path, encoding="utf-8").read()
  assert md.count("## Plots") == 1 and "## Notes\n\nkeep me" in md
  # A new row rewrites results.md without the section; write_plots adds it back.
  results_lib.Results(workdir).add(_row("greedy", 3, 0.5, 25.0))
  assert "## Plots" not in open(md_path, encoding="utf-8").read()
  plots.write_plots(workdir)
  md = open(md_path, encoding="utf-8").read()
  assert md.count("## Plots") == 1 and "| arithmetic | 3 | greedy |" in md


def test_single_round_single_seed(tmp_path):
  workdir = _workdir(tmp_path, [_row("greedy", 0, 0.0, 25.0), _row("mcts", 0, 0.25, 228.0)])
  for p in plots.write_plots(workdir):
    _assert_png(p)
  # One row alone.
  one = _workdir(tmp_path / "one", [_row("greedy", 0, 1.0, 25.0)])
  for p in plots.write_plots(one):
    _assert_png(p)


def test_missing_results_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope" / "results.json")):
    plots.write_plots(str(tmp_path / "nope"))
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "results.json").write_text(json.dumps({"rows": []}))
  with pytest.raises(ValueError, match="has no rows"):
    plots.write_plots(str(empty))
  (empty / "results.json").write_text(json.dumps({"rows": [{"task": "x"}]}))
  with pytest.raises(ValueError, match="results.json.*missing 'round'"):
    plots.write_plots(str(empty))


def test_results_md_rebuilt_when_missing(tmp_path):
  workdir = _workdir(tmp_path, [_row("greedy", 0, 0.5, 25.0)])
  os.remove(os.path.join(workdir, "results.md"))
  plots.write_plots(workdir)
  md = open(os.path.join(workdir, "results.md"), encoding="utf-8").read()
  assert "| arithmetic | 0 | greedy | 50.0% |" in md and "## Plots" in md


def test_aggregate_mean_and_std_over_seeds():
  agg = plots.aggregate(_multi_rows())
  sc = [a for a in agg if a["decoding"] == "self_consistency@4" and a["round"] == 1]
  assert len(sc) == 1
  a = sc[0]
  assert a["num_seeds"] == 3 and a["seeds"] == [0, 1, 2]
  assert a["accuracy_mean"] == pytest.approx(0.46)
  assert a["accuracy_std"] == pytest.approx(0.01)      # sample std of .45 .46 .47
  assert a["forward_passes_mean"] == pytest.approx(91.0)
  single = plots.aggregate([_row("greedy", 0, 0.5, 25.0)])[0]
  assert single["accuracy_std"] == 0.0 and single["num_seeds"] == 1
  old = dict(_row("greedy", 0, 0.5, 25.0))
  del old["rollouts_per_problem"], old["seed"]
  legacy = plots.aggregate([old])[0]
  assert math.isnan(legacy["rollouts_mean"]) and legacy["seeds"] == [0]


def test_family_and_strip():
  assert plots.family("self_consistency@16") == "self_consistency"
  assert plots.family("mcts") == "mcts"
  text = "# Results\n\n| t |\n\n## Plots\n\n![a](plots/a.png)\n\n## Notes\nx\n"
  assert plots.strip_plots_section(text) == "# Results\n\n| t |\n\n## Notes\nx\n"
  assert plots.strip_plots_section("# R\n## Plots") == "# R\n"


def test_compute_plot_rounds_argument(tmp_path):
  rows = [r for r in _multi_rows() if r["task"] == "arithmetic"]
  path = plots.plot_accuracy_vs_compute(rows, str(tmp_path / "c.png"), rounds=[1])
  _assert_png(path)
  with pytest.raises(ValueError, match="no rows for round"):
    plots.plot_accuracy_vs_compute(rows, str(tmp_path / "d.png"), rounds=[7])
