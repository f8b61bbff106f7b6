"""Plots of a run's ``results.json``: accuracy per round and against compute.

``write_plots(workdir)`` reads ``DIR/results.json`` and writes

* ``DIR/plots/accuracy_vs_round.png``: the accuracy of every decoding method
  after each round of self-improvement (round 0: before any);
* ``DIR/plots/accuracy_vs_compute.png``: accuracy against forward passes per
  problem (log scale), one series per decoding-method family, for the first
  and the last round (the paper's Table 7 as a curve);

then links them from a ``## Plots`` section at the end of ``DIR/results.md``.
``alphallm.results`` rewrites ``results.md`` whenever a row is added, so call
``write_plots`` after the last row; calling it again replaces the section and
the images (idempotent). Every file is written to a temporary file and renamed.

A method's *family* is its name before ``@`` (``family("best_of@8") ==
"best_of"``): ``self_consistency@4`` and ``self_consistency@16``, or
``mcts@64`` and ``mcts@230``, are points of one series. With several seeds a
point is the mean over seeds and its error bars one standard deviation
(``ddof=1``); with one seed there are no error bars.

Figures are drawn with matplotlib's object API on an Agg canvas: no display,
no ``pyplot`` state, so importing this module never changes a notebook's
backend. matplotlib is imported when a figure is drawn; ``available()`` says
whether it is installed.
"""

from __future__ import annotations

import collections
import importlib.util
import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from alphallm import io_utils
from alphallm import results as results_lib

PLOTS_DIR = "plots"
ACCURACY_VS_ROUND = "accuracy_vs_round.png"
ACCURACY_VS_COMPUTE = "accuracy_vs_compute.png"
SECTION = "## Plots"
# Families in this order get the first colours; any other follows alphabetically.
_FAMILY_ORDER = ("greedy", "sampling", "self_consistency", "best_of", "weighted_vote",
                 "orm_rerank", "beam", "mcts")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", ":", "-.")
_METRICS = {"accuracy": "accuracy", "forward_passes": "forward_passes_per_problem",
            "tokens": "tokens_per_problem", "rollouts": "rollouts_per_problem"}


def available() -> bool:
  """Whether matplotlib is installed (``write_plots`` needs it)."""
  return importlib.util.find_spec("matplotlib") is not None


def family(decoding: str) -> str:
  """The method family of a decoding name: the part before ``@``."""
  return decoding.partition("@")[0]


def _budget(decoding: str) -> float:
  """The ``N`` of ``NAME@N`` (0 without one), for ordering points of a family."""
  _, _, n = decoding.partition("@")
  try:
    return float(n)
  except ValueError:
    return 0.0


def _family_key(name: str) -> tuple[int, str]:
  return (_FAMILY_ORDER.index(name) if name in _FAMILY_ORDER else len(_FAMILY_ORDER), name)


def aggregate(rows: Iterable[Mapping[str, Any]], keys: Sequence[str] = ("task", "round",
                                                                         "decoding")
              ) -> list[dict[str, Any]]:
  """Mean and standard deviation over seeds of the rows sharing ``keys``.

  Returns one dict per group, sorted by ``keys``: the key values, and for
  ``accuracy``, ``forward_passes``, ``tokens`` and ``rollouts`` (the rows'
  ``*_per_problem`` fields) ``NAME_mean`` and ``NAME_std`` (sample standard
  deviation, 0.0 for a single row; NaN where no row of the group has the
  field), plus ``num_seeds`` and ``seeds`` (a row without ``seed`` counts as
  seed 0).
  """
  groups: dict[tuple, list[Mapping[str, Any]]] = collections.defaultdict(list)
  for row in rows:
    groups[tuple(row[k] for k in keys)].append(row)
  out = []
  for key in sorted(groups, key=lambda k: tuple((str(type(v)), v) for v in k)):
    members = groups[key]
    agg: dict[str, Any] = dict(zip(keys, key))
    for name, field in _METRICS.items():
      values = np.array([float(r[field]) for r in members if r.get(field) is not None])
      agg[f"{name}_mean"] = float(values.mean()) if values.size else float("nan")
      agg[f"{name}_std"] = (float(values.std(ddof=1)) if values.size > 1
                            else 0.0 if values.size else float("nan"))
    agg["seeds"] = sorted({int(r.get("seed", 0) or 0) for r in members})
    agg["num_seeds"] = len(members)
    out.append(agg)
  return out


def read_rows(workdir: str) -> list[dict[str, Any]]:
  """The validated rows of ``DIR/results.json``; errors name the file."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: no results to plot (run the experiment "
                            "first, e.g. python -m alphallm.main --workdir=...)")
  obj = io_utils.read_json(path)
  if not isinstance(obj, dict) or not isinstance(obj.get("rows"), list):
    raise ValueError(f"{path}: expected an object with a 'rows' list")
  try:
    rows = [results_lib.validate_row(r) for r in obj["rows"]]
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e
  if not rows:
    raise ValueError(f"{path} has no rows: nothing to plot")
  return rows


# ---------------------------------------------------------------------------
# Figures.


def _figure(num_panels: int):
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(5.0 * num_panels + 2.0, 4.0), dpi=110, layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, num_panels, squeeze=False)[0]
  return fig, list(axes)


def _save(fig, path: str) -> str:
  """PNG bytes to a temporary file beside ``path``, then renamed over it."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", bbox_inches="tight")
  io_utils.atomic_write_bytes(path, buf.getvalue())
  return path


def _colors(families: Iterable[str]) -> dict[str, Any]:
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  cmap = colormaps["tab10"]
  return {f: cmap(i % 10) for i, f in enumerate(sorted(set(families), key=_family_key))}


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  if not rows:
    raise ValueError("no results rows to plot")
  return [results_lib.validate_row(r) for r in rows]


def _set_ylim(ax, values: Sequence[float]) -> None:
  """Accuracy axis around the data (at least 10 points tall), inside [0, 100]."""
  lo, hi = min(values), max(values)
  pad = max(5.0, 0.1 * (hi - lo))
  lo, hi = max(0.0, lo - pad), min(100.0, hi + pad)
  if hi - lo < 10.0:
    lo, hi = (max(0.0, hi - 10.0), hi) if hi >= 100.0 else (lo, min(100.0, lo + 10.0))
  ax.set_ylim(lo - 1.0, hi + 1.0)


def _legend(fig, axes) -> None:
  handles, labels = {}, []
  for ax in axes:
    for h, label in zip(*ax.get_legend_handles_labels()):
      if label not in handles:
        handles[label] = h
        labels.append(label)
  fig.legend([handles[l] for l in labels], labels, loc="outside right center", fontsize=8,
             frameon=False)


def plot_accuracy_vs_round(rows: Sequence[Mapping[str, Any]], path: str) -> str:
  """Accuracy (%) of each decoding method against the round, one panel per task.

  Mean over seeds, error bars one standard deviation when there are several.
  Returns ``path`` (a PNG, written atomically).
  """
  rows = _check_rows(rows)
  agg = aggregate(rows)
  tasks = sorted({a["task"] for a in agg})
  colors = _colors(family(a["decoding"]) for a in agg)
  fig, axes = _figure(len(tasks))
  for ax, task in zip(axes, tasks):
    points = [a for a in agg if a["task"] == task]
    names = sorted({a["decoding"] for a in points},
                   key=lambda n: (_family_key(family(n)), _budget(n), n))
    seen: collections.Counter = collections.Counter()
    for name in names:
      fam = family(name)
      style = seen[fam]
      seen[fam] += 1
      series = sorted((a for a in points if a["decoding"] == name), key=lambda a: a["round"])
      x = [a["round"] for a in series]
      y = [100 * a["accuracy_mean"] for a in series]
      err = [100 * a["accuracy_std"] for a in series]
      ax.errorbar(x, y, yerr=err if max(a["num_seeds"] for a in series) > 1 else None,
                  label=name, color=colors[fam], marker=_MARKERS[style % len(_MARKERS)],
                  linestyle=_LINESTYLES[style % len(_LINESTYLES)], capsize=3, markersize=5)
    rounds = sorted({a["round"] for a in points})
    ax.set_xticks(rounds)
    if len(rounds) == 1:
      ax.set_xlim(rounds[0] - 0.5, rounds[0] + 0.5)
    _set_ylim(ax, [100 * (a["accuracy_mean"] + s * a["accuracy_std"]) for a in points
                   for s in (-1, 1)])
    ax.set_xlabel("round (0: before self-improvement)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{task}: accuracy per round")
    ax.grid(alpha=0.3)
  _legend(fig, axes)
  return _save(fig, path)


def plot_accuracy_vs_compute(rows: Sequence[Mapping[str, Any]], path: str,
                             rounds: Sequence[int] | None = None) -> str:
  """Accuracy (%) against forward passes per problem (log x), one panel per task.

  One series per decoding-method family and round, its points the family's
  methods sorted by compute (e.g. ``self_consistency@4``, ``@16``). By
  default the first and the last round are drawn (dashed, hollow markers:
  the first; solid: the last); ``rounds`` picks others. Mean over seeds,
  error bars one standard deviation in both coordinates when there are
  several. Returns ``path`` (a PNG, written atomically).
  """
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel
  rows = _check_rows(rows)
  agg = aggregate(rows)
  tasks = sorted({a["task"] for a in agg})
  colors = _colors(family(a["decoding"]) for a in agg)
  chosen_by_task = {}
  for task in tasks:
    have = sorted({a["round"] for a in agg if a["task"] == task})
    chosen = sorted(set(rounds)) if rounds is not None else sorted({have[0], have[-1]})
    missing = [r for r in chosen if r not in have]
    if missing:
      raise ValueError(f"task {task!r} has no rows for round(s) {missing}; rounds: {have}")
    chosen_by_task[task] = chosen
  show_round = any(len(c) > 1 for c in chosen_by_task.values())
  fig, axes = _figure(len(tasks))
  for ax, task in zip(axes, tasks):
    points = [a for a in agg if a["task"] == task]
    chosen = chosen_by_task[task]
    for round_ in chosen:
      last = round_ == chosen[-1]
      for fam in sorted({family(a["decoding"]) for a in points}, key=_family_key):
        series = sorted((a for a in points if a["round"] == round_
                         and family(a["decoding"]) == fam),
                        key=lambda a: (a["forward_passes_mean"], _budget(a["decoding"])))
        if not series:
          continue
        x = [max(a["forward_passes_mean"], 1e-3) for a in series]
        y = [100 * a["accuracy_mean"] for a in series]
        several = max(a["num_seeds"] for a in series) > 1
        label = f"{fam} (round {round_})" if show_round else fam
        ax.errorbar(x, y, yerr=[100 * a["accuracy_std"] for a in series] if several else None,
                    xerr=[a["forward_passes_std"] for a in series] if several else None,
                    label=label, color=colors[fam], marker="o", markersize=5, capsize=3,
                    linestyle="-" if last else "--",
                    markerfacecolor=colors[fam] if last else "none")
        for a, xi, yi in zip(series, x, y):
          if "@" in a["decoding"]:
            ax.annotate("@" + a["decoding"].partition("@")[2], (xi, yi), fontsize=7,
                        xytext=(3, 3), textcoords="offset points", color=colors[fam])
    ax.set_xscale("log")
    xs = [max(a["forward_passes_mean"], 1e-3) for a in points if a["round"] in chosen]
    ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    _set_ylim(ax, [100 * (a["accuracy_mean"] + s * a["accuracy_std"]) for a in points
                   if a["round"] in chosen for s in (-1, 1)])
    ax.set_xlabel("forward passes per problem (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{task}: accuracy vs compute")
    ax.grid(alpha=0.3, which="both")
  _legend(fig, axes)
  return _save(fig, path)


# ---------------------------------------------------------------------------
# The workdir's plots and results.md.

_SECTION_RE = re.compile(r"^## Plots[ \t]*$.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)


def strip_plots_section(markdown: str) -> str:
  """``markdown`` without its ``## Plots`` section(s) (up to the next ``## `` heading)."""
  return _SECTION_RE.sub("", markdown)


def plots_section(paths: Sequence[str], workdir: str) -> str:
  """The ``## Plots`` markdown linking ``paths`` relative to ``workdir``."""
  lines = [SECTION, ""]
  for p in paths:
    rel = os.path.relpath(p, workdir).replace(os.sep, "/")
    title = os.path.splitext(os.path.basename(p))[0].replace("_", " ")
    lines += [f"![{title}]({rel})", ""]
  return "\n".join(lines)


def write_plots(workdir: str) -> list[str]:
  """Writes ``DIR/plots/*.png`` from ``DIR/results.json`` and links them in ``results.md``.

  Idempotent: the images are replaced and an existing ``## Plots`` section
  of ``results.md`` is replaced by the new one (``results.md`` is rebuilt
  from the rows if it is missing). Returns the PNG paths.

  Raises:
    FileNotFoundError: ``DIR/results.json`` does not exist (the message names it).
    ValueError: it is malformed or has no rows.
  """
  rows = read_rows(workdir)
  out_dir = os.path.join(workdir, PLOTS_DIR)
  os.makedirs(out_dir, exist_ok=True)
  paths = [plot_accuracy_vs_round(rows, os.path.join(out_dir, ACCURACY_VS_ROUND)),
           plot_accuracy_vs_compute(rows, os.path.join(out_dir, ACCURACY_VS_COMPUTE))]
  md_path = os.path.join(workdir, "results.md")
  if os.path.exists(md_path):
    with open(md_path, encoding="utf-8") as f:
      text = f.read()
  else:
    text = results_lib.to_markdown(rows)
  text = strip_plots_section(text).rstrip("\n") + "\n\n" + plots_section(paths, workdir)
  io_utils.atomic_write_text(md_path, text)
  return paths


def rebuild_side_files(workdir: str) -> list[str]:
  """Regenerates what is derived from ``DIR/results.json``; returns the paths written.

  ``results.md`` is rewritten from the rows when it differs from them (a
  kill between the two writes leaves it a row short); the plots are redrawn
  (``alphallm.write_plots``) when an earlier run drew them. Nothing is
  written without ``results.json``.
  """
  json_path = os.path.join(workdir, "results.json")
  if not os.path.exists(json_path):
    return []
  rows = results_lib.read_rows(json_path)
  md_path = os.path.join(workdir, "results.md")
  written = []
  want = results_lib.to_markdown(rows)
  current = None
  if os.path.exists(md_path):
    with open(md_path, encoding="utf-8") as f:
      current = f.read()
  table = strip_plots_section(current).rstrip("\n") + "\n" if current else None
  if table != want:
    io_utils.atomic_write_text(md_path, want)
    written.append(md_path)
  if rows and os.path.isdir(os.path.join(workdir, PLOTS_DIR)):
    written.extend(write_plots(workdir))
    if md_path not in written:
      written.append(md_path)
  return written
