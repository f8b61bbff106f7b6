"""MATH grader vs math-verify: agreement on the labelled case set, latency on hostile input.

Usage::

  PYTHONPATH=. python benchmarks/math_grader.py [--out FILE] [--no-math-verify]

Figures (printed as JSON, and written to ``--out``):

* ``ours.agreement``: cases of ``tests/data/math_equivalence_cases.jsonl``
  where ``graders.grade_math(prediction, gold)`` gives the labelled verdict,
  overall, on the cases that do not need execution (``no_execution``) and on
  those that do (``execution``: the prediction is a plain-text expression that
  math-verify can read only through sympy's ``parse_expr``, which executes it).
* ``math_verify.agreement``: the same for math-verify's
  ``verify(parse("$" + gold + "$"), parse(prediction))``, run in a worker
  subprocess with a per-case timeout (a case that times out counts as "not
  equivalent"). Skipped with a message when ``math_verify`` is not importable
  (it is not a project dependency: ``pip install math-verify``).
* ``ours.hostile_max_ms``: the slowest ``math_answers_equal`` / ``grade_math``
  call over the hostile answers of ``tests/test_math_equivalence.py`` (each
  against several partners, both ways, slowest of ``--repeats``; wall time, so
  a loaded machine shows here: see ``load_average``), and
  ``hostile_max_median_ms``, the largest median over the repeats; and
  ``math_verify.hostile``: math-verify's time on each hostile answer, each in
  its own subprocess with a timeout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import selectors
import statistics
import subprocess
import sys
import time

from alphallm import graders
from benchmarks.common import load_average, write_json

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES_PATH = os.path.join(_ROOT, "tests", "data", "math_equivalence_cases.jsonl")
TEST_PATH = os.path.join(_ROOT, "tests", "test_math_equivalence.py")

# The worker: reads JSON lines {"gold", "prediction"} on stdin, answers
# {"verdict", "seconds"} per line (math-verify's own timeouts stay on).
_WORKER = r"""
import json, sys, time
from math_verify import parse, verify
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
  case = json.loads(line)
  start = time.perf_counter()
  try:
    verdict = bool(verify(parse("$" + case["gold"] + "$"), parse(case["prediction"])))
  except Exception as e:  # math-verify raising is its "not equivalent".
    verdict = False
  print(json.dumps({"verdict": verdict, "seconds": time.perf_counter() - start}), flush=True)
"""


def load_cases(path: str = CASES_PATH) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def load_hostile() -> tuple[list[str], list[str]]:
  """``HOSTILE_ANSWERS`` and ``PARTNERS`` of the test file (the one list of them)."""
  spec = importlib.util.spec_from_file_location("test_math_equivalence", TEST_PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.HOSTILE_ANSWERS, module.PARTNERS


def math_verify_available() -> str | None:
  """None when math-verify can be imported, else why not."""
  probe = subprocess.run([sys.executable, "-c", "import math_verify"], capture_output=True,
                         text=True, timeout=120)
  return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["?"])[-1]


class _Worker:
  """A math-verify subprocess answering one case at a time, replaced after a timeout."""

  def __init__(self):
    self.proc = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    self.selector = selectors.DefaultSelector()
    self.selector.register(self.proc.stdout, selectors.EVENT_READ)
    if self._read(300.0) is None:
      raise RuntimeError("math-verify worker did not start")

  def _read(self, timeout_s: float) -> dict | None:
    if not self.selector.select(timeout_s):
      return None
    line = self.proc.stdout.readline()
    return json.loads(line) if line else None

  def ask(self, gold: str, prediction: str, timeout_s: float) -> dict | None:
    self.proc.stdin.write(json.dumps({"gold": gold, "prediction": prediction}) + "\n")
    self.proc.stdin.flush()
    return self._read(timeout_s)

  def close(self) -> None:
    self.proc.kill()
    self.proc.wait()


def run_math_verify(pairs: list[tuple[str, str]], timeout_s: float) -> list[dict]:
  """``{"verdict", "seconds", "timed_out"}`` for each ``(gold, prediction)``."""
  results, worker = [], _Worker()
  try:
    for gold, prediction in pairs:
      start = time.perf_counter()
      answer = worker.ask(gold, prediction, timeout_s)
      if answer is None:
        worker.close()
        worker = _Worker()
        answer = {"verdict": False, "seconds": time.perf_counter() - start, "timed_out": True}
      results.append({"timed_out": False, **answer})
  finally:
    worker.close()
  return results


def agreement(cases: list[dict], verdicts: list[bool]) -> dict:
  """Agreement with the labels, overall and split by ``execution``."""
  def share(select):
    rows = [(c, v) for c, v in zip(cases, verdicts) if select(c)]
    agree = sum(v is c["expected"] for c, v in rows)
    return {"agree": agree, "cases": len(rows), "rate": round(agree / max(1, len(rows)), 4)}
  return {"all": share(lambda c: True), "no_execution": share(lambda c: not c["execution"]),
          "execution": share(lambda c: c["execution"])}


def disagreements(cases: list[dict], verdicts: list[bool]) -> list[dict]:
  return [{"gold": c["gold"], "prediction": c["prediction"][:120], "expected": c["expected"],
           "note": c["note"]} for c, v in zip(cases, verdicts) if v is not c["expected"]]


def our_hostile_latency(hostile: list[str], partners: list[str], repeats: int) -> dict:
  """The slowest call of our grader on each hostile answer (ms)."""
  worst, medians = {}, {}
  for answer in hostile:
    calls = [lambda a=answer, p=p: graders.math_answers_equal(a, p) for p in partners]
    calls += [lambda a=answer, p=p: graders.math_answers_equal(p, a) for p in partners]
    calls += [lambda a=answer, p=p: graders.grade_math(f"\\boxed{{{a}}}", p) for p in partners]
    key = answer[:60]
    worst[key] = medians[key] = 0.0
    for call in calls:
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
      worst[key] = max(worst[key], round(max(times) * 1000, 3))
      medians[key] = max(medians[key], round(statistics.median(times) * 1000, 3))
  slowest = max(worst, key=worst.get)
  return {"hostile_max_ms": worst[slowest], "hostile_slowest": slowest,
          "hostile_max_median_ms": max(medians.values()),
          "hostile_calls": len(hostile) * 3 * len(partners) * repeats, "hostile_ms": worst}


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default=None, help="write the JSON here")
  ap.add_argument("--repeats", type=int, default=5, help="repeats of each hostile call")
  ap.add_argument("--timeout", type=float, default=20.0, help="math-verify seconds per case")
  ap.add_argument("--no-math-verify", action="store_true", help="skip math-verify")
  args = ap.parse_args(argv)

  cases = load_cases()
  hostile, partners = load_hostile()
  start = time.perf_counter()
  ours = [graders.grade_math(c["prediction"], c["gold"]) for c in cases]
  ours_s = time.perf_counter() - start
  report = {
      "cases": len(cases), "execution_cases": sum(c["execution"] for c in cases),
      "ours": {"agreement": agreement(cases, ours), "disagreements": disagreements(cases, ours),
               "case_set_seconds": round(ours_s, 4),
               **our_hostile_latency(hostile, partners, args.repeats)},
      "load_average": load_average(),
  }
  why_not = "skipped (--no-math-verify)" if args.no_math_verify else math_verify_available()
  if why_not is not None:
    print(f"math-verify skipped: {why_not}", file=sys.stderr)
    report["math_verify"] = {"skipped": why_not}
  else:
    mv = run_math_verify([(c["gold"], c["prediction"]) for c in cases], args.timeout)
    verdicts = [r["verdict"] for r in mv]
    hostile_runs = run_math_verify([(partners[0], h) for h in hostile], args.timeout)
    report["math_verify"] = {
        "agreement": agreement(cases, verdicts), "disagreements": disagreements(cases, verdicts),
        "case_timeouts": sum(r["timed_out"] for r in mv),
        "case_max_s": round(max(r["seconds"] for r in mv), 3),
        "hostile_max_s": round(max(r["seconds"] for r in hostile_runs), 3),
        "hostile_timeouts": sum(r["timed_out"] for r in hostile_runs),
        "hostile_s": {h[:60]: round(r["seconds"], 3) for h, r in zip(hostile, hostile_runs)},
        "timeout_s": args.timeout,
    }
  print(json.dumps({k: v for k, v in report.items() if k != "math_verify"}
                   | {"math_verify_agreement": report["math_verify"].get("agreement")}, indent=1))
  if args.out:
    write_json(args.out, report)
  return report


if __name__ == "__main__":
  main()
