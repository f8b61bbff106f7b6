"""Turns the GSM8K / MATH files users download into the layout the loader reads.

Usage::

  python -m alphallm.datasets.prepare gsm8k --source PATH --out DIR [--force] [--skip-malformed]
  python -m alphallm.datasets.prepare math  --source PATH --out DIR [--force] [--skip-malformed]

``--source`` is what you have (``sources`` lists the accepted layouts: the
public JSONL files, the MATH tarball's JSON tree, Parquet copies from the HF
hub). ``--out`` receives what ``loader.load`` reads::

  gsm8k  DIR/train.jsonl, DIR/test.jsonl       {"question": ..., "answer": ...} per line
  math   DIR/{train,test}/<subject>/<id>.json  {"problem", "level", "type", "solution"}

Every record is validated first (an error names the file and line, or file
and row); nothing is written unless all of a run's splits read cleanly (or
``--skip-malformed`` skips and counts the bad records). Each output file or
split directory appears at once: it is written in a temporary directory under
``DIR`` and renamed into place. A non-empty ``DIR`` is refused unless
``--force``, which replaces this dataset's files there (and removes a split
the new source lacks) and leaves other files alone. The command reads its
output back through ``loader.load`` and prints the counts per split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile

from alphallm.datasets import base, gsm8k_format, loader, math_format, sources

# What prepare writes in --out for each dataset: one entry per split.
OUTPUTS = {gsm8k_format.NAME: {s: f"{s}.jsonl" for s in gsm8k_format.SPLITS},
           math_format.NAME: {s: s for s in math_format.SPLITS}}
MAX_SUBJECT_CHARS = 64


@dataclasses.dataclass(frozen=True)
class SplitReport:
  """What prepare wrote for one split.

  Attributes:
    split: ``"train"`` or ``"test"``.
    count: examples written (and read back by the loader).
    path: the file or directory written.
    skipped: malformed records skipped (``--skip-malformed``).
    first_skipped: the first skipped record's error, or "".
  """

  split: str
  count: int
  path: str
  skipped: int = 0
  first_skipped: str = ""


@dataclasses.dataclass(frozen=True)
class PrepareResult:
  """What one prepare run did.

  Attributes:
    splits: the report of each split written, in source order.
    removed: stale outputs removed (``--force``, a split the source lacks).
    kind: the kind of source read: ``"jsonl"``, ``"parquet"`` or ``"json_tree"``.
    read_from: the directories the source files were found in.
  """

  splits: list[SplitReport]
  removed: list[str]
  kind: str
  read_from: list[str]


def subject_dir(subject: str) -> str:
  """A directory name for a MATH ``type``: ``"Counting & Probability"`` -> ``counting_and_probability``."""
  slug = re.sub(r"[^a-z0-9]+", "_", subject.lower().replace("&", " and ")).strip("_")
  return slug[:MAX_SUBJECT_CHARS] or "other"


def gsm8k_files(split: str, records: list[sources.Record]) -> dict[str, bytes]:
  """``{"<split>.jsonl": bytes}``: one compact JSON object per line, fields in ``FIELDS`` order."""
  lines = [json.dumps({k: r.fields[k] for k in gsm8k_format.FIELDS}) + "\n" for r in records]
  return {f"{split}.jsonl": "".join(lines).encode("utf-8")}


def math_files(split: str, records: list[sources.Record]) -> dict[str, bytes]:
  """``{"<split>/<subject>/<id>.json": bytes}``, one JSON object per problem.

  A record from a JSON tree keeps its relative path; one from Parquet goes to
  ``<split>/<subject_dir(type)>/<i>.json``, ``i`` its 0-based index in the split.
  """
  files = {}
  for i, r in enumerate(records):
    rel = r.rel_path or f"{split}/{subject_dir(r.fields['type'])}/{i}.json"
    files[rel] = json.dumps({k: r.fields[k] for k in math_format.FIELDS}).encode("utf-8")
  return files


def check_out_dir(out_dir: str, source: str, force: bool) -> None:
  """Refuses an ``out_dir`` that is the source, not a directory, or non-empty (unless ``force``).

  Raises:
    DatasetError: naming the directory and what to do.
  """
  if os.path.realpath(out_dir) == os.path.realpath(source):
    raise base.DatasetError(f"--out {out_dir!r} is the --source directory; write elsewhere")
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise base.DatasetError(f"--out {out_dir!r} exists and is not a directory")
  entries = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
  if entries and not force:
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise base.DatasetError(
        f"--out {out_dir!r} is not empty ({len(entries)} entries: {shown}); pass --force to "
        f"replace the dataset's files there")


def write_outputs(out_dir: str, outputs: dict[str, dict[str, bytes]],
                  managed: list[str]) -> list[str]:
  """Writes ``outputs`` (``{top: {rel_path: bytes}}``) into ``out_dir``, each ``top`` at once.

  Everything is written under a temporary directory in ``out_dir`` first; then
  each name of ``managed`` present in ``out_dir`` is moved aside and the new
  ``top`` (if any) renamed into its place. Returns the managed names removed
  without replacement (stale splits).
  """
  os.makedirs(out_dir, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".prepare-", dir=out_dir)
  try:
    for files in outputs.values():
      for rel, data in files.items():
        path = os.path.join(staging, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
          f.write(data)
    old = os.path.join(staging, ".old")
    os.mkdir(old)
    removed = []
    for top in managed:
      final = os.path.join(out_dir, top)
      if os.path.lexists(final):
        os.replace(final, os.path.join(old, top))
        if top not in outputs:
          removed.append(final)
      if top in outputs:
        os.replace(os.path.join(staging, top), final)
    return removed
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def prepare(name: str, source: str, out_dir: str, *, force: bool = False,
            skip_malformed: bool = False) -> PrepareResult:
  """Reads ``name``'s files in ``source``, validates them and writes the loader's layout in ``out_dir``.

  Raises:
    DatasetError: unknown dataset, nothing found in ``source``, a malformed
      record (naming file and line or row; unless ``skip_malformed``), an
      empty split, or a refused ``out_dir``; nothing is written then.
  """
  found = sources.find(name, source)
  check_out_dir(out_dir, source, force)
  to_files = gsm8k_files if name == gsm8k_format.NAME else math_files
  outputs, read = {}, {}
  for split, src in found.items():
    records, skipped = sources.read_split(name, src, skip_malformed)
    outputs[OUTPUTS[name][split]] = to_files(split, records)
    read[split] = (len(records), skipped)
  removed = write_outputs(out_dir, outputs, list(OUTPUTS[name].values()))
  reports = []
  for split, (count, skipped) in read.items():
    back = len(loader.load(name, split, source_dir=out_dir))
    if back != count:
      raise base.DatasetError(f"{out_dir}: wrote {count} {split} examples but read back {back}")
    reports.append(SplitReport(split, count, os.path.join(out_dir, OUTPUTS[name][split]),
                               len(skipped), str(skipped[0]) if skipped else ""))
  kinds = sorted({src.kind for src in found.values()})
  roots = sorted({src.root for src in found.values()})
  return PrepareResult(reports, removed, "+".join(kinds), roots)


def format_report(name: str, result: PrepareResult) -> str:
  """The lines the command prints: the source read, then one line per split written."""
  lines = [f"{name}: read {result.kind} from {', '.join(result.read_from)}"]
  for r in result.splits:
    extra = f" (skipped {r.skipped} malformed; first: {r.first_skipped})" if r.skipped else ""
    lines.append(f"  {r.split}: {r.count} examples -> {r.path}{extra}")
  lines += [f"  removed stale {path} (the source has no such split)" for path in result.removed]
  return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m alphallm.datasets.prepare",
      description="Turn downloaded GSM8K / MATH files into the layout alphallm reads "
                  "(docs/data.md).")
  p.add_argument("dataset", choices=sorted(OUTPUTS))
  p.add_argument("--source", required=True, help="directory with the downloaded files")
  p.add_argument("--out", required=True, help="directory to write (empty, or --force)")
  p.add_argument("--force", action="store_true",
                 help="replace this dataset's files in a non-empty --out")
  p.add_argument("--skip-malformed", action="store_true",
                 help="skip (and count) malformed records instead of stopping")
  return p


def main(argv: list[str] | None = None) -> int:
  """The command line; returns the exit status (1 with a one-line error on bad input)."""
  args = _parser().parse_args(argv)
  try:
    result = prepare(args.dataset, args.source, args.out, force=args.force,
                     skip_malformed=args.skip_malformed)
  except (base.DatasetError, OSError) as e:
    print(f"prepare: error: {e}", file=sys.stderr)
    return 1
  print(format_report(args.dataset, result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
