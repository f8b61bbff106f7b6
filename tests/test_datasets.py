"""Datasets (direct and through TFDS array_record, without TensorFlow) and their tasks."""

import json
import logging
import os
import shutil
import sys

import pytest

from alphallm import datasets, graders
from alphallm.datasets import gsm8k as gsm8k_data
from alphallm.datasets import gsm8k_format, loader, math_dataset, math_format, tfds_builders
from alphallm.tasks import Problem, get_task, make_splits
from alphallm.tasks import gsm8k as gsm8k_task
from alphallm.tasks import math_task

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
MATH_DIR = os.path.join(_TESTS_DIR, "data", "math")
GSM8K_DIR = os.environ.get("ALPHALLM_GSM8K_DIR") or os.path.join(
    os.path.dirname(_TESTS_DIR), "..", "shared", "data", "gsm8k")
needs_gsm8k = pytest.mark.skipif(
    not os.path.isdir(GSM8K_DIR),
    reason=f"GSM8K data not found at {GSM8K_DIR} (set ALPHALLM_GSM8K_DIR)")

TRAIN = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "He has 3+4=<<3+4=7>>7 apples.\n#### 7"},
    {"question": "A pen costs $2. How much do 6 pens cost?",
     "answer": "6 pens cost 6*2=$<<6*2=12>>12.\n#### 12"},
    {"question": "Ann\u2019s cake has 8 slices; she eats half. How many are left?",
     "answer": "She eats 8/2=<<8/2=4>>4 slices.\n\nSo 8-4=<<8-4=4>>4 are left.\n#### 4"},
    {"question": "A car goes 60 km per hour for 2.5 hours. How far does it go?",
     "answer": "It goes 60*2.5=<<60*2.5=150>>150 km.\n#### 150"},
    {"question": "A town has 1,200 people and 300 leave. How many remain?",
     "answer": "1,200-300=<<1200-300=900>>900 remain.\n#### 900"},
]
TEST = [
    {"question": "Sam has 10 coins and loses 3. How many are left?",
     "answer": "10-3=<<10-3=7>>7 coins are left.\n#### 7"},
    {"question": "A box holds 250,000 grains. How many in 4 boxes?",
     "answer": "4*250000=<<4*250000=1000000>>1000000 grains.\n#### 1,000,000"},
    {"question": "Lee owes $5 and pays $8. What is his balance?",
     "answer": "5-8=<<5-8=-3>>-3 dollars.\n#### -3"},
]


def _write_jsonl(path, records, extra_lines=()):
  lines = [json.dumps(r) for r in records] + list(extra_lines)
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def gsm8k_dir(tmp_path):
  root = tmp_path / "gsm8k"
  root.mkdir()
  _write_jsonl(root / "train.jsonl", TRAIN)
  _write_jsonl(root / "test.jsonl", TEST)
  return root


# --- GSM8K, read directly. ---


def test_read_split(gsm8k_dir):
  examples = gsm8k_data.read_split(str(gsm8k_dir), "train")
  assert [ex.question for ex in examples] == [r["question"] for r in TRAIN]
  assert [ex.line for ex in examples] == [1, 2, 3, 4, 5]
  assert examples[2].steps == ["She eats 8/2=<<8/2=4>>4 slices.", "So 8-4=<<8-4=4>>4 are left."]
  assert [ex.answer for ex in gsm8k_data.read_split(str(gsm8k_dir), "test")] == [
      "7", "1,000,000", "-3"]


def test_strip_annotations():
  assert gsm8k_data.strip_annotations("6*2=$<<6*2=12>>12 and <<1+1=2>>2") == "6*2=$12 and 2"


@pytest.mark.parametrize("bad_line,reason", [
    ("{not json", "invalid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"question": "q?"}', "'answer'"),
    ('{"question": "", "answer": "#### 1"}', "'question'"),
    ('{"question": 3, "answer": "#### 1"}', "'question'"),
    ('{"question": "q?", "answer": "no final line"}', "#### N"),
    ('{"question": "q?", "answer": "#### many"}', "#### N"),
    ('{"question": "q?", "answer": "#### 1e99999"}', "#### N"),
])
def test_malformed_line_names_file_and_line(gsm8k_dir, bad_line, reason):
  path = gsm8k_dir / "train.jsonl"
  _write_jsonl(path, TRAIN[:2], [bad_line] + [json.dumps(r) for r in TRAIN[2:]])
  with pytest.raises(datasets.MalformedRecordError, match=reason) as info:
    gsm8k_data.read_split(str(gsm8k_dir), "train")
  assert f"{path}:3:" in str(info.value)
  assert (info.value.path, info.value.line) == (str(path), 3)


def test_non_utf8_line_names_file_and_line(gsm8k_dir):
  path = gsm8k_dir / "test.jsonl"
  path.write_bytes(json.dumps(TEST[0]).encode() + b"\n\xff\xfe\n")
  with pytest.raises(datasets.MalformedRecordError, match=f"{path}:2: .*UTF-8"):
    gsm8k_data.read_split(str(gsm8k_dir), "test")


def test_skip_malformed_counts_and_logs(gsm8k_dir, caplog):
  _write_jsonl(gsm8k_dir / "train.jsonl", TRAIN, ["{oops", '{"question": "q"}'])
  with caplog.at_level(logging.WARNING):
    examples = gsm8k_data.read_split(str(gsm8k_dir), "train", skip_malformed=True)
  assert len(examples) == len(TRAIN)
  assert "skipped 2 malformed record(s)" in caplog.text
  assert f"{gsm8k_dir / 'train.jsonl'}:6" in caplog.text


def test_blank_lines_are_ignored(gsm8k_dir):
  _write_jsonl(gsm8k_dir / "test.jsonl", TEST[:1], ["", "   ", json.dumps(TEST[1])])
  examples = gsm8k_data.read_split(str(gsm8k_dir), "test")
  assert [ex.line for ex in examples] == [1, 4]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_split_is_an_error(gsm8k_dir, content):
  (gsm8k_dir / "test.jsonl").write_text(content)
  with pytest.raises(datasets.EmptySplitError, match="no examples"):
    gsm8k_data.read_split(str(gsm8k_dir), "test")


def test_all_malformed_with_skip_is_an_empty_split(gsm8k_dir):
  (gsm8k_dir / "test.jsonl").write_text("{bad\n{worse\n")
  with pytest.raises(datasets.EmptySplitError, match="2 malformed record"):
    gsm8k_data.read_split(str(gsm8k_dir), "test", skip_malformed=True)


def test_missing_files_are_clear_errors(gsm8k_dir, tmp_path, monkeypatch):
  with pytest.raises(datasets.DatasetError, match="ALPHALLM_GSM8K_DIR"):
    gsm8k_data.load("test", data_dir=tmp_path / "nowhere")
  monkeypatch.setenv("ALPHALLM_GSM8K_DIR", str(tmp_path / "nowhere"))
  with pytest.raises(datasets.DatasetError, match="nowhere"):
    gsm8k_data.load("test")
  os.remove(gsm8k_dir / "test.jsonl")
  with pytest.raises(datasets.DatasetError, match="test.jsonl does not exist"):
    gsm8k_data.load("test", data_dir=gsm8k_dir)
  with pytest.raises(datasets.DatasetError, match="unknown gsm8k split"):
    gsm8k_data.load("validation", data_dir=gsm8k_dir)


def test_env_var_selects_the_source(gsm8k_dir, monkeypatch):
  monkeypatch.setenv("ALPHALLM_GSM8K_DIR", str(gsm8k_dir))
  assert len(gsm8k_data.load("test")) == len(TEST)


# --- Through TFDS (array_record + as_data_source), without TensorFlow. ---


def test_tfds_round_trip_gsm8k(gsm8k_dir, tmp_path):
  tfds_dir = tmp_path / "tfds"
  for split in ("train", "test"):
    source = gsm8k_data.load(split, data_dir=gsm8k_dir, tfds_dir=tfds_dir)
    direct = gsm8k_data.read_split(str(gsm8k_dir), split)
    assert isinstance(source, tfds_builders.ExampleSource)
    assert len(source) == len(direct)
    assert list(source) == direct  # Same examples, same (file) order.
    assert source[-1] == direct[-1] and source[1:3] == direct[1:3]
    with pytest.raises(IndexError):
      source[len(direct)]
  assert source[0].question == TEST[0]["question"]
  files = os.listdir(tfds_dir / "alphallm_gsm8k" / "1.0.0")
  assert any(".array_record" in f for f in files), files
  assert "tensorflow" not in sys.modules


def test_tfds_round_trip_math(tmp_path):
  for split in ("train", "test"):
    source = math_dataset.load(split, data_dir=MATH_DIR, tfds_dir=tmp_path)
    assert list(source) == math_dataset.read_split(MATH_DIR, split)
  assert "tensorflow" not in sys.modules


def test_tfds_is_prepared_once(gsm8k_dir, tmp_path):
  gsm8k_data.load("test", data_dir=gsm8k_dir, tfds_dir=tmp_path)
  version_dir = tmp_path / "alphallm_gsm8k" / "1.0.0"
  stamp = {f: os.path.getmtime(version_dir / f) for f in os.listdir(version_dir)}
  again = gsm8k_data.load("test", data_dir=gsm8k_dir, tfds_dir=tmp_path)
  assert len(again) == len(TEST)
  assert {f: os.path.getmtime(version_dir / f) for f in os.listdir(version_dir)} == stamp


def test_tfds_refuses_stale_data(gsm8k_dir, tmp_path):
  gsm8k_data.load("test", data_dir=gsm8k_dir, tfds_dir=tmp_path)
  _write_jsonl(gsm8k_dir / "test.jsonl", TEST[:1])
  with pytest.raises(datasets.DatasetError, match="other source files"):
    gsm8k_data.load("test", data_dir=gsm8k_dir, tfds_dir=tmp_path)
  with pytest.raises(datasets.DatasetError, match="skip_malformed"):
    gsm8k_data.load("test", data_dir=gsm8k_dir, tfds_dir=tmp_path, skip_malformed=True)


def test_tfds_reads_prepared_data_without_the_source(gsm8k_dir, tmp_path):
  gsm8k_data.load("test", data_dir=gsm8k_dir, tfds_dir=tmp_path / "tfds")
  shutil.rmtree(gsm8k_dir)
  assert len(gsm8k_data.load("test", data_dir=gsm8k_dir, tfds_dir=tmp_path / "tfds")) == len(TEST)


def test_tfds_build_reports_malformed_lines(gsm8k_dir, tmp_path):
  path = gsm8k_dir / "train.jsonl"
  _write_jsonl(path, TRAIN, ["{oops"])
  with pytest.raises(datasets.MalformedRecordError, match=f"{path}:6:"):
    gsm8k_data.load("train", data_dir=gsm8k_dir, tfds_dir=tmp_path / "strict")
  source = gsm8k_data.load("train", data_dir=gsm8k_dir, tfds_dir=tmp_path / "lenient",
                           skip_malformed=True)
  assert len(source) == len(TRAIN)


def test_tfds_empty_split_and_missing_split(gsm8k_dir, tmp_path):
  (gsm8k_dir / "test.jsonl").write_text("\n")
  with pytest.raises(datasets.EmptySplitError):
    gsm8k_data.load("test", data_dir=gsm8k_dir, tfds_dir=tmp_path / "a")
  os.remove(gsm8k_dir / "test.jsonl")
  assert len(gsm8k_data.load("train", data_dir=gsm8k_dir, tfds_dir=tmp_path / "b")) == 5
  with pytest.raises(datasets.DatasetError, match="has no split 'test'"):
    gsm8k_data.load("test", data_dir=gsm8k_dir, tfds_dir=tmp_path / "b")


def test_tfds_builder_with_manual_dir(gsm8k_dir, tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds_builders.GSM8KBuilder(data_dir=str(tmp_path), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(gsm8k_dir), try_download_gcs=False))
  source = builder.as_data_source(split="test")
  assert len(source) == len(TEST)
  assert source[2]["solution"].decode() == TEST[2]["answer"]
  assert int(source[2]["line"]) == 3


# --- The loader, and the old module names that call it. ---


def test_old_names_are_the_loader_and_the_format_modules(gsm8k_dir, tmp_path):
  assert gsm8k_data.GSM8KExample is gsm8k_format.GSM8KExample
  assert gsm8k_data.read_split is gsm8k_format.read_split
  assert math_dataset.MATHExample is math_format.MATHExample
  assert tfds_builders.GSM8KBuilder.module is gsm8k_format
  assert gsm8k_data.load("train", gsm8k_dir) == loader.load("gsm8k", "train", source_dir=gsm8k_dir)
  assert list(loader.load("gsm8k", "test", source_dir=gsm8k_dir, tfds_dir=tmp_path)) == list(
      gsm8k_data.load("test", gsm8k_dir, tmp_path))
  assert math_dataset.load("test", MATH_DIR) == loader.load("math", "test", source_dir=MATH_DIR)


def test_loader_default_source_dirs(gsm8k_dir, monkeypatch):
  monkeypatch.setenv("ALPHALLM_MATH_DIR", MATH_DIR)
  assert loader.default_source_dir("math") == MATH_DIR
  assert len(loader.load("math", "train")) == 3
  monkeypatch.delenv("ALPHALLM_GSM8K_DIR", raising=False)
  assert loader.default_source_dir("gsm8k") == os.path.normpath(
      os.path.join(datasets.SHARED_DATA_DIR, "gsm8k"))
  with pytest.raises(datasets.DatasetError, match="unknown dataset 'gsm8K'"):
    loader.load("gsm8K", "test", source_dir=gsm8k_dir)


# --- MATH, read directly. ---


def test_math_read_split():
  examples = math_dataset.read_split(MATH_DIR, "test")
  assert [ex.path for ex in examples] == sorted(ex.path for ex in examples)
  assert len(examples) == 7
  by_path = {ex.path: ex for ex in examples}
  assert by_path["test/algebra/1.json"].answer == "5"
  assert by_path["test/algebra/2.json"].answer == "(5, 2)"
  assert by_path["test/number_theory/7.json"].level == -1  # "Level ?".
  assert by_path["test/counting_and_probability/6.json"].type == "Counting & Probability"
  assert len(math_dataset.read_split(MATH_DIR, "train")) == 3


def _copy_math(tmp_path):
  root = tmp_path / "math"
  shutil.copytree(MATH_DIR, root)
  return root


@pytest.mark.parametrize("content,reason,line", [
    ('{"problem": "p",\n "level": ', "invalid JSON", 2),
    ('["p"]', "expected a JSON object", None),
    ('{"problem": "p", "level": "Level 1", "type": "Algebra"}', "'solution'", None),
    ('{"problem": "p", "level": "Level 1", "type": "Algebra", "solution": "It is 5."}',
     "boxed", None),
])
def test_math_malformed_file_is_named(tmp_path, content, reason, line):
  root = _copy_math(tmp_path)
  bad = root / "test" / "algebra" / "99.json"
  bad.write_text(content)
  with pytest.raises(datasets.MalformedRecordError, match=reason) as info:
    math_dataset.read_split(str(root), "test")
  assert str(bad) in str(info.value) and info.value.line == line
  assert len(math_dataset.read_split(str(root), "test", skip_malformed=True)) == 7


def test_math_empty_and_missing_splits(tmp_path):
  (tmp_path / "test" / "algebra").mkdir(parents=True)
  with pytest.raises(datasets.EmptySplitError):
    math_dataset.read_split(str(tmp_path), "test")
  with pytest.raises(datasets.DatasetError, match="does not exist"):
    math_dataset.read_split(str(tmp_path), "train")


# --- The full GSM8K through TFDS, built once per session. ---


@pytest.fixture(scope="session")
def gsm8k_tfds_dir(tmp_path_factory):
  if not os.path.isdir(GSM8K_DIR):
    pytest.skip(f"GSM8K data not found at {GSM8K_DIR} (set ALPHALLM_GSM8K_DIR)")
  return tmp_path_factory.mktemp("gsm8k_tfds")


@needs_gsm8k
@pytest.mark.parametrize("split,size", [("test", 1319), ("train", 7473)])
def test_full_gsm8k_through_tfds(gsm8k_tfds_dir, split, size):
  source = gsm8k_data.load(split, data_dir=GSM8K_DIR, tfds_dir=gsm8k_tfds_dir)
  direct = gsm8k_data.read_split(GSM8K_DIR, split)
  assert len(source) == len(direct) == size
  assert list(source) == direct
  assert "tensorflow" not in sys.modules


# --- GSM8KTask. ---


def test_gsm8k_task_problems(gsm8k_dir):
  task = gsm8k_task.GSM8KTask(data_dir=str(gsm8k_dir), split="test")
  assert len(task) == 3
  problems = task.generate(seed=0, num=3)
  assert problems == task.generate(seed=0, num=3)
  assert sorted(p.answer for p in problems) == ["-3", "1000000", "7"]
  assert len({p.question for p in problems}) == 3
  assert all(Problem.from_json(p.to_json()) == p for p in problems)
  with pytest.raises(ValueError, match="cannot draw 4"):
    task.generate(seed=0, num=4)


def test_gsm8k_task_demonstrations_verify(gsm8k_dir):
  for knobs in ({}, {"calculator_annotations": True}, {"answer_line": "sentence"}):
    task = gsm8k_task.GSM8KTask(data_dir=str(gsm8k_dir), split="train", **knobs)
    for p in task.generate(seed=1, num=5):
      demo = task.demonstration(p)
      assert task.verify(p, demo)
      assert task.extract_answer(demo) == p.answer
      steps = task.split_steps(demo)
      assert steps[-1].startswith(task.answer_prefix) and all(steps)
      assert ("<<" in demo) == bool(knobs.get("calculator_annotations"))
      assert not task.verify(p, demo.rpartition(task.answer_prefix)[0] + "A: 123456")


def test_gsm8k_task_demonstration_format(gsm8k_dir):
  task = gsm8k_task.GSM8KTask(data_dir=str(gsm8k_dir), split="train")
  p = next(p for p in task.generate(seed=0, num=5) if p.answer == "4")
  assert task.demonstration(p) == "She eats 8/2=4 slices.\nSo 8-4=4 are left.\nA: 4"
  sentence = gsm8k_task.GSM8KTask(data_dir=str(gsm8k_dir), split="train",
                                  answer_line="sentence", calculator_annotations=True)
  assert sentence.demonstration(p) == ("She eats 8/2=<<8/2=4>>4 slices.\n"
                                       "So 8-4=<<8-4=4>>4 are left.\nThe answer is 4.")
  assert graders.check_calculator_annotations(sentence.demonstration(p)) == (2, 0)


def test_gsm8k_task_prompts(gsm8k_dir):
  plain = gsm8k_task.GSM8KTask(data_dir=str(gsm8k_dir), split="test")
  p = plain.generate(seed=0, num=1)[0]
  assert plain.prompt(p) == f"Q: {p.question}\n"
  shots = gsm8k_task.GSM8KTask(data_dir=str(gsm8k_dir), split="test", num_shots=2)
  prompt = shots.prompt(p)
  assert prompt.endswith(f"Q: {p.question}\n") and prompt.count("Q: ") == 3
  assert prompt.count("\nA: ") == 2 and any(r["question"] in prompt for r in TRAIN)
  chat = gsm8k_task.GSM8KTask(data_dir=str(gsm8k_dir), split="test", num_shots=1,
                              prompt_format="chat")
  prompt = chat.prompt(p)
  assert prompt.endswith(f"User: {p.question}\nAssistant:\n") and prompt.count("User: ") == 2


def test_gsm8k_task_shots_are_not_problems(gsm8k_dir):
  task = gsm8k_task.GSM8KTask(data_dir=str(gsm8k_dir), split="train", num_shots=2)
  assert len(task) == len(TRAIN) - 2
  questions = {p.question for p in task.generate(seed=0, num=len(task))}
  prompt = task.prompt(Problem(question="?", answer="1"))
  assert not any(q in prompt for q in questions)


def test_gsm8k_task_registry_and_knobs(gsm8k_dir):
  task = get_task("gsm8k", data_dir=str(gsm8k_dir), split="test")
  assert isinstance(task, gsm8k_task.GSM8KTask) and task.step_delimiter == "\n"
  for bad in ({"prompt_format": "xml"}, {"answer_line": "loud"}, {"num_shots": -1}):
    with pytest.raises(ValueError):
      get_task("gsm8k", data_dir=str(gsm8k_dir), **bad)
  train, held_out = make_splits(task, seed=0, num_train=1, num_eval=2)
  assert not {p.question for p in train} & {p.question for p in held_out}


def test_gsm8k_task_reads_through_tfds(gsm8k_dir, tmp_path):
  direct = gsm8k_task.GSM8KTask(data_dir=str(gsm8k_dir), split="train", num_shots=1)
  via_tfds = gsm8k_task.GSM8KTask(data_dir=str(gsm8k_dir), split="train", num_shots=1,
                                  tfds_dir=str(tmp_path))
  assert direct.generate(seed=3, num=4) == via_tfds.generate(seed=3, num=4)
  p = direct.generate(seed=3, num=1)[0]
  assert direct.prompt(p) == via_tfds.prompt(p)


@needs_gsm8k
def test_gsm8k_task_on_the_real_data():
  task = gsm8k_task.GSM8KTask(data_dir=GSM8K_DIR, split="test", num_shots=4)
  assert len(task) == 1319
  problems = task.generate(seed=0, num=100)
  for p in problems:
    demo = task.demonstration(p)
    assert task.verify(p, demo) and task.extract_answer(demo) == p.answer
    assert all(task.split_steps(demo))
  assert task.generate(seed=0, num=100) == problems


# --- MATHTask and the option rule. ---


def test_option_boundaries_rule():
  text = "No formula here.\n\nStill none.\n\nNow $x = 1$.\n\nThen $y$ is $\\boxed{2}$."
  bounds = math_task.option_boundaries(text)
  options = math_task.split_options(text)
  assert options == ["No formula here.\n\nStill none.\n\nNow $x = 1$.\n\n",
                     "Then $y$ is $\\boxed{2}$."]
  assert bounds == [len(options[0]), len(text)]
  blank_lines = "a < b\n \n\t\n"
  assert math_task.option_boundaries(blank_lines + "c") == [len(blank_lines), len(blank_lines) + 1]
  assert math_task.option_boundaries("$a \\le b$\n\n") == [len("$a \\le b$\n\n")]
  assert math_task.option_boundaries("no formula\n\nat all") == [len("no formula\n\nat all")]
  assert math_task.option_boundaries("") == []
  assert math_task.option_boundaries("x=1\n\n" * 20_000) == []  # Over MAX_OPTION_TEXT_CHARS.


def test_math_task_demonstrations_follow_the_option_rule():
  task = get_task("math", data_dir=MATH_DIR, split="test")
  assert task.step_delimiter == "\n\n" and len(task) == 7
  for p in task.generate(seed=0, num=7):
    demo = task.demonstration(p)
    assert task.verify(p, demo)
    assert task.extract_answer(demo) == graders.canonical_math_answer(p.answer)
    steps = task.split_steps(demo)
    assert steps[-1] == f"A: {p.answer}"
    # The blank lines of a demonstration are exactly its option ends.
    assert [o.rstrip("\n") for o in math_task.split_options(demo)] == steps
    assert task.prompt(p) == f"Q: {p.question}\n\n"


def test_math_task_grading():
  task = math_task.MATHTask(data_dir=MATH_DIR, split="test", types=["Prealgebra"])
  (p,) = task.generate(seed=0, num=1)
  assert p.answer == "\\frac{5}{6}" and p.data["level"] == 1
  assert task.verify(p, "We add. $\\boxed{\\dfrac{5}{6}}$")
  assert task.verify(p, "A: 5/6")
  assert not task.verify(p, "\\boxed{0.83}")
  assert task.extract_answer("\\boxed{\\frac{10}{12}}") == "5/6"


def test_math_task_knobs(tmp_path):
  assert len(math_task.MATHTask(data_dir=MATH_DIR, split="test", levels=[1])) == 3
  assert len(math_task.MATHTask(data_dir=MATH_DIR, split="train")) == 3
  with pytest.raises(ValueError, match="no problems"):
    math_task.MATHTask(data_dir=MATH_DIR, split="test", levels=[5])
  with pytest.raises(ValueError, match="cannot draw 8"):
    math_task.MATHTask(data_dir=MATH_DIR, split="test").generate(seed=0, num=8)
  via_tfds = math_task.MATHTask(data_dir=MATH_DIR, split="test", tfds_dir=str(tmp_path))
  assert via_tfds.generate(seed=1, num=5) == math_task.MATHTask(
      data_dir=MATH_DIR, split="test").generate(seed=1, num=5)
