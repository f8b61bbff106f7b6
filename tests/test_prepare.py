"""prepare: the files users download (JSONL, MATH JSON tree, Parquet) -> the loader's layout."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

from alphallm import datasets
from alphallm.datasets import gsm8k_format, loader, math_format, prepare, sources

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_TESTS_DIR)
MATH_DIR = os.path.join(_TESTS_DIR, "data", "math")
DATASETS_DIR = os.path.join(_REPO, "alphallm", "datasets")

TRAIN = [
    {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {"question": "A pen costs $2. What do 6 cost?", "answer": "6*2=<<6*2=12>>12\n#### 12"},
    {"question": "Ann\u2019s cake has 8 slices; she eats half.", "answer": "8/2=<<8/2=4>>4\n#### 4"},
    {"question": "Sam has 10 coins and loses 3.", "answer": "10-3=<<10-3=7>>7\n#### 7"},
]
TEST = [
    {"question": "A box holds 250,000 grains. How many in 4?", "answer": "#### 1,000,000"},
    {"question": "Lee owes $5 and pays $8. Balance?", "answer": "5-8=<<5-8=-3>>-3\n#### -3"},
]
MATH_ROWS = [
    {"problem": "Solve $x+1=3$.", "level": "Level 1", "type": "Algebra",
     "solution": "So $x=\\boxed{2}$."},
    {"problem": "How many ways to pick 2 of 4?", "level": "Level 2",
     "type": "Counting & Probability", "solution": "$\\binom42=\\boxed{6}$."},
    {"problem": "What is $\\frac12+\\frac13$?", "level": "Level ?", "type": "Prealgebra",
     "solution": "It is $\\boxed{\\frac{5}{6}}$."},
]


def _write_jsonl(path, records, extra_lines=()):
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = [json.dumps(r) for r in records] + list(extra_lines)
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def _write_parquet(path, rows, columns=None):
  pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
  pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")
  columns = columns or list(rows[0])
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in columns}), str(path),
                 row_group_size=2)
  return path


def _gsm8k_fields(examples):
  return [{"question": ex.question, "answer": ex.solution} for ex in examples]


# --- GSM8K. ---


def test_gsm8k_jsonl_round_trips_through_the_loader(tmp_path):
  # The openai/grade-school-math checkout layout; train_socratic.jsonl is ignored.
  data = tmp_path / "grade-school-math" / "grade_school_math" / "data"
  _write_jsonl(data / "train.jsonl", TRAIN)
  _write_jsonl(data / "test.jsonl", TEST, ["", "  "])
  _write_jsonl(data / "train_socratic.jsonl", TRAIN[:1])
  out = tmp_path / "out"
  result = prepare.prepare("gsm8k", str(tmp_path / "grade-school-math"), str(out))
  assert (result.kind, result.removed, result.read_from) == ("jsonl", [], [str(data)])
  assert {r.split: r.count for r in result.splits} == {"train": 4, "test": 2}
  assert sorted(os.listdir(out)) == ["test.jsonl", "train.jsonl"]
  assert _gsm8k_fields(loader.load("gsm8k", "train", source_dir=out)) == TRAIN
  assert _gsm8k_fields(loader.load("gsm8k", "test", source_dir=out)) == TEST
  via_tfds = loader.load("gsm8k", "test", source_dir=out, tfds_dir=tmp_path / "tfds")
  assert _gsm8k_fields(via_tfds) == TEST


def test_gsm8k_parquet_round_trips_in_shard_order(tmp_path):
  snapshot = tmp_path / "hf_gsm8k"
  _write_parquet(snapshot / "main" / "train-00000-of-00002.parquet", TRAIN[:3])
  _write_parquet(snapshot / "main" / "train-00001-of-00002.parquet", TRAIN[3:])
  _write_parquet(snapshot / "main" / "test-00000-of-00001.parquet", TEST)
  _write_parquet(snapshot / "socratic" / "test-00000-of-00001.parquet", TEST[:1])
  out = tmp_path / "out"
  result = prepare.prepare("gsm8k", str(snapshot), str(out))
  assert result.kind == "parquet" and [r.count for r in result.splits] == [4, 2]
  assert result.read_from == [str(snapshot / "main")]
  assert _gsm8k_fields(loader.load("gsm8k", "train", source_dir=out)) == TRAIN
  assert _gsm8k_fields(loader.load("gsm8k", "test", source_dir=out)) == TEST


def test_gsm8k_parquet_extra_columns_are_ignored(tmp_path):
  rows = [dict(r, id=i) for i, r in enumerate(TEST)]
  _write_parquet(tmp_path / "src" / "test.parquet", rows)
  prepare.prepare("gsm8k", str(tmp_path / "src"), str(tmp_path / "out"))
  assert _gsm8k_fields(loader.load("gsm8k", "test", source_dir=tmp_path / "out")) == TEST


@pytest.mark.parametrize("bad_line,reason", [
    ('{"question": "q?"}', "field 'answer' is missing"),
    ("{not json", "invalid JSON"),
    ('{"question": "q?", "answer": "no final line"}', "#### N"),
])
def test_gsm8k_bad_line_names_file_and_line_and_writes_nothing(tmp_path, bad_line, reason):
  path = _write_jsonl(tmp_path / "src" / "train.jsonl", TRAIN[:2], [bad_line, json.dumps(TRAIN[2])])
  out = tmp_path / "out"
  with pytest.raises(datasets.MalformedRecordError, match=reason) as info:
    prepare.prepare("gsm8k", str(tmp_path / "src"), str(out))
  assert f"{path}:3: " in str(info.value)
  assert not out.exists()


def test_gsm8k_empty_file_names_the_file(tmp_path):
  path = tmp_path / "src" / "test.jsonl"
  path.parent.mkdir()
  path.write_text("")
  with pytest.raises(datasets.EmptySplitError, match="no examples") as info:
    prepare.prepare("gsm8k", str(tmp_path / "src"), str(tmp_path / "out"))
  assert str(path) in str(info.value)


def test_gsm8k_bad_parquet_row_names_file_and_row(tmp_path):
  rows = [TRAIN[0], TRAIN[1], {"question": "q?", "answer": None}, TRAIN[3]]
  path = _write_parquet(tmp_path / "src" / "train-00000-of-00001.parquet", rows)
  with pytest.raises(datasets.MalformedRecordError, match="'answer'") as info:
    prepare.prepare("gsm8k", str(tmp_path / "src"), str(tmp_path / "out"))
  assert f"{path}: row 2 (0-based): " in str(info.value)
  assert (info.value.path, info.value.row, info.value.line) == (str(path), 2, None)


def test_gsm8k_parquet_schema_errors_name_file_and_column(tmp_path):
  path = _write_parquet(tmp_path / "a" / "test.parquet", TEST, columns=["question"])
  with pytest.raises(datasets.DatasetError, match=f"{path}: no column 'answer'"):
    prepare.prepare("gsm8k", str(tmp_path / "a"), str(tmp_path / "out"))
  rows = [{"question": r["question"], "answer": i} for i, r in enumerate(TEST)]
  path = _write_parquet(tmp_path / "b" / "test.parquet", rows)
  with pytest.raises(datasets.DatasetError, match=f"{path}: column 'answer' has type int64"):
    prepare.prepare("gsm8k", str(tmp_path / "b"), str(tmp_path / "out"))
  garbage = tmp_path / "c" / "test.parquet"
  garbage.parent.mkdir()
  garbage.write_bytes(b"PAR1 not really")
  with pytest.raises(datasets.DatasetError, match=f"{garbage}: not a readable Parquet file"):
    prepare.prepare("gsm8k", str(tmp_path / "c"), str(tmp_path / "out"))


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
  path = tmp_path / "src" / "test.parquet"
  path.parent.mkdir()
  path.write_bytes(b"")
  monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # `import pyarrow.parquet` fails.
  with pytest.raises(datasets.DatasetError, match="needs pyarrow.*pip install pyarrow"):
    prepare.prepare("gsm8k", str(tmp_path / "src"), str(tmp_path / "out"))


def test_gsm8k_source_errors(tmp_path):
  with pytest.raises(datasets.DatasetError, match="is not a directory"):
    prepare.prepare("gsm8k", str(tmp_path / "nowhere"), str(tmp_path / "out"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(datasets.DatasetError, match="no GSM8K split found"):
    prepare.prepare("gsm8k", str(tmp_path / "empty"), str(tmp_path / "out"))
  _write_jsonl(tmp_path / "both" / "test.jsonl", TEST)
  (tmp_path / "both" / "test-00000-of-00001.parquet").write_bytes(b"")
  with pytest.raises(datasets.DatasetError, match="both test.jsonl and test Parquet"):
    prepare.prepare("gsm8k", str(tmp_path / "both"), str(tmp_path / "out"))
  os.remove(tmp_path / "both" / "test-00000-of-00001.parquet")
  with pytest.raises(datasets.DatasetError, match="is the --source directory"):
    prepare.prepare("gsm8k", str(tmp_path / "both"), str(tmp_path / "both"))


def test_skip_malformed_counts(tmp_path):
  _write_jsonl(tmp_path / "src" / "train.jsonl", TRAIN, ["{oops", '{"question": "q"}'])
  result = prepare.prepare("gsm8k", str(tmp_path / "src"), str(tmp_path / "out"),
                           skip_malformed=True)
  (r,) = result.splits
  assert (r.count, r.skipped) == (4, 2) and ":5: " in r.first_skipped
  assert _gsm8k_fields(loader.load("gsm8k", "train", source_dir=tmp_path / "out")) == TRAIN


# --- MATH. ---


def test_math_json_tree_round_trips(tmp_path):
  # The tarball extracts to MATH/{train,test}/<subject>/<n>.json.
  src = tmp_path / "src"
  (src / "MATH").mkdir(parents=True)
  for split in ("train", "test"):
    os.symlink(os.path.join(MATH_DIR, split), src / "MATH" / split)
  out = tmp_path / "out"
  result = prepare.prepare("math", str(src), str(out))
  assert result.kind == "json_tree" and result.read_from == [str(src / "MATH")]
  assert {r.split: r.count for r in result.splits} == {"train": 3, "test": 7}
  for split in ("train", "test"):
    assert loader.load("math", split, source_dir=out) == math_format.read_split(MATH_DIR, split)
  via_tfds = loader.load("math", "test", source_dir=out, tfds_dir=tmp_path / "tfds")
  assert list(via_tfds) == math_format.read_split(MATH_DIR, "test")


def test_math_parquet_round_trips(tmp_path):
  # One directory per subject, as in the hub's per-subject copies.
  for i, row in enumerate(MATH_ROWS):
    _write_parquet(tmp_path / "src" / prepare.subject_dir(row["type"]) /
                   "test-00000-of-00001.parquet", [row])
  _write_parquet(tmp_path / "src" / "algebra" / "train-00000-of-00001.parquet", MATH_ROWS[:1])
  out = tmp_path / "out"
  result = prepare.prepare("math", str(tmp_path / "src"), str(out))
  assert result.kind == "parquet" and {r.split: r.count for r in result.splits} == {
      "test": 3, "train": 1}
  examples = loader.load("math", "test", source_dir=out)
  assert sorted(ex.path for ex in examples) == [
      "test/algebra/0.json", "test/counting_and_probability/1.json", "test/prealgebra/2.json"]
  got = {ex.problem: (ex.level, ex.type, ex.solution) for ex in examples}
  assert got == {r["problem"]: (math_format.parse_level(r["level"]), r["type"], r["solution"])
                 for r in MATH_ROWS}
  assert json.loads((out / "test" / "prealgebra" / "2.json").read_text()) == MATH_ROWS[2]


@pytest.mark.parametrize("names", [
    ("data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"),
    ("algebra/math-train.parquet", "algebra/math-test.parquet"),
    ("algebra/train/0000.parquet", "algebra/test/0000.parquet"),
])
def test_math_parquet_file_names(tmp_path, names):
  for name, rows in zip(names, (MATH_ROWS[:1], MATH_ROWS)):
    _write_parquet(tmp_path / "src" / name, rows)
  _write_parquet(tmp_path / "src" / "algebra" / "notes.parquet", MATH_ROWS)  # No split: ignored.
  result = prepare.prepare("math", str(tmp_path / "src"), str(tmp_path / "out"))
  assert {r.split: r.count for r in result.splits} == {"train": 1, "test": 3}


def test_math_bad_file_is_named_and_nothing_is_written(tmp_path):
  bad = tmp_path / "src" / "test" / "algebra" / "9.json"
  bad.parent.mkdir(parents=True)
  (bad.parent / "1.json").write_text(json.dumps(MATH_ROWS[0]))
  bad.write_text('{"problem": "p",\n "level": ')
  with pytest.raises(datasets.MalformedRecordError, match="invalid JSON") as info:
    prepare.prepare("math", str(tmp_path / "src"), str(tmp_path / "out"))
  assert f"{bad}:2: " in str(info.value)
  bad.write_text(json.dumps(dict(MATH_ROWS[0], solution="no box")))
  with pytest.raises(datasets.MalformedRecordError, match=f"{bad}: .*boxed"):
    prepare.prepare("math", str(tmp_path / "src"), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_math_bad_parquet_row_names_file_and_row(tmp_path):
  rows = MATH_ROWS[:1] + [dict(MATH_ROWS[1], level="")] + MATH_ROWS[2:]
  path = _write_parquet(tmp_path / "src" / "data" / "test-00000-of-00001.parquet", rows)
  with pytest.raises(datasets.MalformedRecordError, match="'level'") as info:
    prepare.prepare("math", str(tmp_path / "src"), str(tmp_path / "out"))
  assert f"{path}: row 1 (0-based): " in str(info.value)


def test_subject_dir():
  assert prepare.subject_dir("Counting & Probability") == "counting_and_probability"
  assert prepare.subject_dir("Intermediate Algebra") == "intermediate_algebra"
  assert prepare.subject_dir("../../etc") == "etc"
  assert prepare.subject_dir("???") == "other"
  assert len(prepare.subject_dir("x" * 1000)) == prepare.MAX_SUBJECT_CHARS


# --- The out directory and the command line. ---


def test_out_dir_refused_unless_force_which_replaces_only_dataset_files(tmp_path, capsys):
  src = tmp_path / "src"
  _write_jsonl(src / "train.jsonl", TRAIN)
  _write_jsonl(src / "test.jsonl", TEST)
  out = tmp_path / "out"
  out.mkdir()
  (out / "NOTES").write_text("mine")
  argv = ["gsm8k", "--source", str(src), "--out", str(out)]
  assert prepare.main(argv) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "is not empty (1 entries: NOTES)" in err and "--force" in err
  os.remove(src / "test.jsonl")  # The new source has no test split: the old one is stale.
  _write_jsonl(out / "test.jsonl", TEST)
  assert prepare.main(argv + ["--force"]) == 0
  printed = capsys.readouterr().out
  assert f"train: 4 examples -> {out / 'train.jsonl'}" in printed
  assert f"removed stale {out / 'test.jsonl'}" in printed
  assert sorted(os.listdir(out)) == ["NOTES", "train.jsonl"]  # No temporary files left.
  assert (out / "NOTES").read_text() == "mine"


def test_failed_run_leaves_the_out_dir_as_it_was(tmp_path):
  src = tmp_path / "src"
  _write_jsonl(src / "train.jsonl", TRAIN)
  out = tmp_path / "out"
  prepare.prepare("gsm8k", str(src), str(out))
  before = (out / "train.jsonl").read_bytes()
  _write_jsonl(src / "train.jsonl", TRAIN, ["{oops"])
  with pytest.raises(datasets.MalformedRecordError):
    prepare.prepare("gsm8k", str(src), str(out), force=True)
  assert os.listdir(out) == ["train.jsonl"] and (out / "train.jsonl").read_bytes() == before


def test_write_outputs_cleans_up_when_a_rename_fails(tmp_path, monkeypatch):
  out = tmp_path / "out"
  def fail(*args):
    raise OSError("disk gone")
  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError, match="disk gone"):
    prepare.write_outputs(str(out), {"train.jsonl": {"train.jsonl": b"x\n"}}, ["train.jsonl"])
  assert os.listdir(out) == []


def test_command_line_module_runs(tmp_path):
  src = tmp_path / "src"
  _write_jsonl(src / "test.jsonl", TEST)
  cmd = [sys.executable, "-m", "alphallm.datasets.prepare", "gsm8k", "--source", str(src),
         "--out", str(tmp_path / "out")]
  done = subprocess.run(cmd, capture_output=True, text=True, cwd=_REPO, timeout=120, check=False)
  assert done.returncode == 0, done.stderr
  assert done.stdout.splitlines() == [f"gsm8k: read jsonl from {src}",
                                      f"  test: 2 examples -> {tmp_path / 'out' / 'test.jsonl'}"]
  again = subprocess.run(cmd, capture_output=True, text=True, cwd=_REPO, timeout=120, check=False)
  assert again.returncode == 1 and again.stderr.startswith("prepare: error: --out")


def test_loader_names_and_unknown_dataset(tmp_path):
  assert loader.names() == ["gsm8k", "math"]
  with pytest.raises(datasets.DatasetError, match="unknown dataset 'svamp'"):
    loader.load("svamp", "test", source_dir=tmp_path)
  with pytest.raises(datasets.DatasetError, match="unknown dataset"):
    sources.find("svamp", str(tmp_path))


# --- The package's structure: no import circle, no function-level imports, no eval. ---


def _modules():
  return sorted(p for p in pathlib.Path(DATASETS_DIR).glob("*.py"))


def _imported(node):
  """The modules an import node names (``from a import b`` -> ``a`` and ``a.b``)."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  return [node.module] + [f"{node.module}.{a.name}" for a in node.names]


def test_datasets_modules_import_without_a_circle():
  graph, late = {}, []
  for path in _modules():
    name = "alphallm.datasets" + ("" if path.stem == "__init__" else f".{path.stem}")
    tree = ast.parse(path.read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    graph[name] = {m for n in top for m in _imported(n)
                   if m.startswith("alphallm.datasets.") and m != name}
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in top:
        late += [(path.name, m) for m in _imported(node) if not m.startswith("pyarrow")]
  assert late == []  # Only the optional pyarrow is imported inside a function.
  graph = {k: {m for m in v if m in graph} for k, v in graph.items()}
  done, order = set(), []
  while len(done) < len(graph):
    ready = [k for k, deps in graph.items() if k not in done and deps <= done]
    assert ready, f"import circle among {sorted(set(graph) - done)}"
    done |= set(ready)
    order += ready
  assert order.index("alphallm.datasets.gsm8k_format") < order.index("alphallm.datasets.loader")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_datasets_modules_never_call_eval(path):
  banned = {"eval", "exec", "compile", "__import__", "sympify", "literal_eval", "parse_expr"}
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Call):
      fn = node.func
      name = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", None)
      if isinstance(fn, ast.Attribute) and name == "compile":
        assert getattr(fn.value, "id", None) == "re", ast.unparse(node)
        continue
      assert name not in banned, ast.unparse(node)


def test_over_long_line_is_named_without_reading_it_whole(tmp_path):
  path = tmp_path / "src" / "train.jsonl"
  path.parent.mkdir()
  long = b" " * (3 * gsm8k_format.MAX_LINE_BYTES) + json.dumps(TRAIN[0]).encode()
  path.write_bytes(json.dumps(TRAIN[1]).encode() + b"\n" + long + b"\n" +
                   json.dumps(TRAIN[2]).encode() + b"\n")
  size = len(long) + 1
  for read in (lambda: gsm8k_format.read_split(str(path.parent), "train"),
               lambda: prepare.prepare("gsm8k", str(path.parent), str(tmp_path / "out"))):
    with pytest.raises(datasets.MalformedRecordError, match=f"{path}:2: .*line is {size} bytes"):
      read()
  result = prepare.prepare("gsm8k", str(path.parent), str(tmp_path / "out"), skip_malformed=True)
  assert result.splits[0].count == 2  # Line 3 is still line 3, read after the long one.
  assert [ex.line for ex in gsm8k_format.read_split(str(path.parent), "train",
                                                     skip_malformed=True)] == [1, 3]
