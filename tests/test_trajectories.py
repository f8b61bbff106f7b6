"""Tests for alphallm.trajectories: schema, atomic shards, store resume."""

import copy
import json
import os
import types

import numpy as np
import pytest
from array_record.python import array_record_data_source
from array_record.python import array_record_module

from alphallm import trajectories as tr
from alphallm.tasks import get_task
from alphallm.tokenizer import CharTokenizer


def _record(i: int = 0, round_index: int = 1) -> dict:
  task = get_task("arithmetic")
  problem = task.generate(seed=i, num=1)[0]
  steps = task.demonstration(problem).split("\n")
  path = [tr.make_node(option=s + "\n", visits=np.int32(5 - k), q=np.float32(0.5),
                       prior=0.25, value=0.1 * k, critic_value=0.3, prm=None,
                       orm=0.9 if k == len(steps) - 1 else None, score=np.float64(1.5),
                       terminal=k == len(steps) - 1)
          for k, s in enumerate(steps)]
  return tr.make_record(
      round_index=round_index, task=task.name, problem=problem, prompt=task.prompt(problem),
      completion=task.demonstration(problem), path=path, selection="best_leaf",
      critic_score=np.float32(0.75), orm_score=0.8, verified=True, kept=True,
      prompt_tokens=12, completion_tokens=np.float32(20.0), generated_tokens=300,
      forward_passes=np.float32(450.0), extra={"note": "x", "pi": [1, 2]})


def test_make_record_is_plain_json_and_valid():
  r = _record()
  assert tr.record_problems(r) == []
  assert json.loads(json.dumps(r, allow_nan=False)) == r
  assert r["compute"]["forward_passes"] == 450 and isinstance(r["compute"]["forward_passes"], int)
  assert isinstance(r["path"][0]["visits"], int)
  assert tr.record_problem(r).uid == r["problem"]["uid"]


def test_round_trip(tmp_path):
  records = [_record(i) for i in range(5)]
  path = str(tmp_path / "a.array_record")
  assert tr.write_shard(path, records) == 5
  assert tr.read_shard(path) == records
  assert tr.read_dir(str(tmp_path)) == records


def test_readable_with_array_record_data_source_without_tf(tmp_path):
  records = [_record(i) for i in range(3)]
  path = str(tmp_path / "a.array_record")
  tr.write_shard(path, records)
  source = array_record_data_source.ArrayRecordDataSource([path])
  assert len(source) == 3
  assert json.loads(source[2].decode("utf-8")) == records[2]


def test_data_source_random_access_across_files(tmp_path):
  store = tr.TrajectoryStore(str(tmp_path))
  store.write_shard(1, 0, [_record(0), _record(1)])
  store.write_shard(1, 1, [])
  store.write_shard(1, 2, [_record(2)])
  source = store.data_source(1)
  assert len(source) == 3
  assert source[2] == _record(2) and source[-3] == _record(0)
  with pytest.raises(IndexError):
    source[3]


def test_empty_shard(tmp_path):
  path = str(tmp_path / "e.array_record")
  tr.write_shard(path, [])
  assert tr.read_shard(path) == []


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("final"), "record 1: missing key 'final'"),
    (lambda r: r["final"].pop("kept"), "record 1: missing key 'final.kept'"),
    (lambda r: r["compute"].update(forward_passes=2.5), "'compute.forward_passes' must be"),
    (lambda r: r["compute"].update(prompt_tokens=-1), "'compute.prompt_tokens' must be"),
    (lambda r: r.update(round=True), "'round' must be a non-negative int"),
    (lambda r: r["path"][1].update(q=float("nan")), "'path[1].q' must be a finite number"),
    (lambda r: r["path"][0]["critic"].pop("prm"), "missing key 'path[0].critic.prm'"),
    (lambda r: r["path"].insert(1, "node"), "key 'path[1]' must be an object, got str"),
    (lambda r: r.update(path={}), "'path' must be a list"),
    (lambda r: r["problem"].update(uid="0" * 16), "'problem.uid'"),
    (lambda r: r.update(schema_version=2), "'schema_version' must be 1"),
    (lambda r: r.update(foo=1), "unknown key 'foo'"),
    (lambda r: r["final"].update(verified="yes"), "'final.verified' must be a bool or null"),
    (lambda r: r.update(extra={"a": object()}), "record 1: not JSON-serialisable"),
])
def test_write_rejects_off_schema_records(tmp_path, mutate, message):
  records = [_record(0), copy.deepcopy(_record(1))]
  mutate(records[1])
  path = str(tmp_path / "a.array_record")
  with pytest.raises(tr.SchemaError) as e:
    tr.write_shard(path, records)
  assert message in str(e.value)
  assert os.listdir(tmp_path) == []


def test_write_rejects_non_dict_record(tmp_path):
  with pytest.raises(tr.SchemaError, match="record 0: record must be an object"):
    tr.write_shard(str(tmp_path / "a.array_record"), ["not a record"])


def test_crash_during_rename_leaves_no_shard_and_no_temp(tmp_path, monkeypatch):
  store = tr.TrajectoryStore(str(tmp_path))
  store.write_shard(2, 0, [_record(0, 2)])

  def crash(src, dst):
    raise OSError("simulated crash")

  monkeypatch.setattr(tr.os, "replace", crash)
  with pytest.raises(OSError, match="simulated crash"):
    store.write_shard(2, 1, [_record(1, 2), _record(2, 2)])
  monkeypatch.undo()
  # The complete shard and its checksum record (issue 15), no temporary.
  assert sorted(os.listdir(tmp_path)) == ["round2-shard00000.array_record",
                                          "round2-shard00000.array_record.sha256"]
  assert store.completed_shards(2) == [0]
  assert store.missing_shards(2, 3) == [1, 2]
  assert store.records(2) == [_record(0, 2)]
  # Resume: redo the missing shard; nothing lost, nothing duplicated.
  store.write_shard(2, 1, [_record(1, 2), _record(2, 2)])
  assert store.records(2) == [_record(i, 2) for i in range(3)]


def test_crash_while_writing_leaves_no_temp(tmp_path, monkeypatch):
  class Exploding:
    def __init__(self, path, options):
      self.f = open(path, "wb")

    def write(self, payload):
      self.f.write(payload[:3])
      raise KeyboardInterrupt

    def close(self):
      self.f.close()

  monkeypatch.setattr(tr.array_record_module, "ArrayRecordWriter", Exploding)
  store = tr.TrajectoryStore(str(tmp_path))
  with pytest.raises(KeyboardInterrupt):
    store.write_shard(0, 0, [_record(0, 0)])
  assert os.listdir(tmp_path) == []
  assert store.completed_shards(0) == []


def test_cleanup_removes_temporaries_of_killed_writers(tmp_path):
  store = tr.TrajectoryStore(str(tmp_path))
  store.write_shard(1, 0, [_record(0)])
  stale = tmp_path / ".round1-shard00001.array_record.abc123.tmp"
  stale.write_bytes(b"partial")
  (tmp_path / "notes.txt").write_text("keep me")
  assert store.completed_shards(1) == [0]
  assert store.cleanup_temp() == [str(stale)]
  assert sorted(os.listdir(tmp_path)) == ["notes.txt", "round1-shard00000.array_record",
                                          "round1-shard00000.array_record.sha256"]


def test_existing_shard_is_not_overwritten_by_default(tmp_path):
  store = tr.TrajectoryStore(str(tmp_path))
  store.write_shard(1, 0, [_record(0)])
  with pytest.raises(FileExistsError, match="round1-shard00000"):
    store.write_shard(1, 0, [_record(1)])
  store.write_shard(1, 0, [_record(1)], overwrite=True)
  assert store.records(1) == [_record(1)]


def test_store_rejects_records_of_another_round(tmp_path):
  store = tr.TrajectoryStore(str(tmp_path))
  with pytest.raises(tr.SchemaError,
                     match="record 0: key 'round' is 1 but the shard is for round 3"):
    store.write_shard(3, 0, [_record(0, 1)])


def test_store_lists_rounds_and_ignores_foreign_files(tmp_path):
  store = tr.TrajectoryStore(str(tmp_path))
  store.write_shard(10, 1, [_record(1, 10)])
  store.write_shard(2, 0, [_record(0, 2)])
  for name in ["notes.txt", "round2-shard1.array_record", "round02-shard00001.array_record",
               "round2-shard00001.array_record.bak", "other.array_record"]:
    (tmp_path / name).write_bytes(b"foreign")
  (tmp_path / "round2-shard00002.array_record").mkdir()
  assert store.rounds() == [2, 10]
  assert store.completed_shards(2) == [0]
  assert store.completed_shards(10) == [1]
  assert store.records(2) == [_record(0, 2)]


def test_read_dir_names_foreign_file(tmp_path):
  tr.write_shard(str(tmp_path / "a.array_record"), [_record(0)])
  (tmp_path / "b.array_record").write_bytes(b"not an array record")
  (tmp_path / ".hidden.array_record").write_bytes(b"skipped")
  with pytest.raises(tr.TrajectoryFileError, match="b.array_record"):
    tr.read_dir(str(tmp_path))
  assert tr.read_dir(str(tmp_path), pattern="a*") == [_record(0)]


def test_read_dir_natural_order(tmp_path):
  for r in (10, 2, 1):
    tr.write_shard(str(tmp_path / f"round{r}-shard00000.array_record"), [_record(r, r)])
  assert [x["round"] for x in tr.read_dir(str(tmp_path))] == [1, 2, 10]


def _write_raw(path, payloads):
  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
  for p in payloads:
    writer.write(p)
  writer.close()


@pytest.mark.parametrize("corrupt", ["truncate", "flip", "garbage"])
def test_corrupt_file_error_names_the_file(tmp_path, corrupt):
  store = tr.TrajectoryStore(str(tmp_path))
  path = store.write_shard(1, 0, [_record(i) for i in range(3)])
  data = open(path, "rb").read()
  if corrupt == "truncate":
    data = data[:len(data) // 2]
  elif corrupt == "flip":
    data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
  else:
    data = b"\x00garbage" * 10
  open(path, "wb").write(data)
  for read in (lambda: tr.read_shard(path), lambda: store.records(1),
               lambda: [store.data_source(1)[i] for i in range(3)]):
    with pytest.raises(tr.TrajectoryFileError, match="round1-shard00000.array_record"):
      read()


@pytest.mark.parametrize("payload, message", [
    (b"\xff\xfe", "record 1: not UTF-8"),
    (b"{not json", "record 1: not a JSON trajectory"),
    (b"[1, 2]", "record 1: record must be an object"),
    (b'{"round": 1}', "record 1: missing key 'schema_version'"),
])
def test_foreign_records_error_names_file_and_index(tmp_path, payload, message):
  path = tmp_path / "x.array_record"
  _write_raw(path, [tr.encode_record(_record(0)), payload])
  with pytest.raises(tr.TrajectoryFileError) as e:
    tr.read_shard(str(path))
  assert str(path) in str(e.value) and message in str(e.value)
  source = tr.TrajectoryDataSource([str(path)])
  assert source[0] == _record(0)
  with pytest.raises(tr.TrajectoryFileError, match="x.array_record: record 1"):
    source[1]


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError):
    tr.read_shard(str(tmp_path / "nope.array_record"))


def test_shard_names():
  assert tr.shard_name(3, 7) == "round3-shard00007.array_record"
  assert tr.parse_shard_name("round3-shard00007.array_record") == (3, 7)
  assert tr.parse_shard_name("round03-shard00007.array_record") is None
  assert tr.parse_shard_name("round3-shard7.array_record") is None
  with pytest.raises(ValueError):
    tr.shard_name(0, 100_000)
  with pytest.raises(ValueError):
    tr.shard_name(-1, 0)


def test_path_from_tree():
  tok = CharTokenizer()
  # Root 0 -> node 1 ("7+5=12\n") -> node 2 ("A: 12" + EOS); node 3 a sibling of 1.
  text = tok.encode("7+5=12\nA: 12") + [tok.eos_id]
  tokens = np.zeros((1, 4, 16), np.int32)
  tokens[0, 1, :7] = text[:7]
  tokens[0, 2, :len(text)] = text
  f = lambda *v: np.array([v], np.float32)  # noqa: E731
  tree = types.SimpleNamespace(
      parents=np.array([[-1, 0, 1, 0]]), action_from_parent=np.array([[-1, 1, 0, 0]]),
      node_visits=np.array([[9, 6, 5, 2]]), node_values=f(0.5, 0.6, 0.7, 0.1),
      qvalues=np.array([[[0.1, 0.6], [0.7, 0.0], [0, 0], [0, 0]]], np.float32),
      children_prior_logits=np.array([[[0.0, 0.0], [1.0, -np.inf], [0, 0], [0, 0]]]),
      tokens=tokens, length=np.array([[0, 7, len(text), 3]]),
      value=f(0.5, 0.6, 0.8, 0.1), prm=f(0, 0.9, np.nan, 0), orm=f(0, 0.3, 0.95, 0),
      has_orm=np.array([[False, False, True, False]]), score=f(0, 1.5, 2.5, 0),
      terminal=np.array([[False, False, True, False]]))
  path = tr.path_from_tree(tree, 0, 2, tok)
  assert [n["option"] for n in path] == ["7+5=12\n", "A: 12"]
  assert [n["visits"] for n in path] == [6, 5]
  assert [n["prior"] for n in path] == [0.5, 1.0]
  assert path[0]["q"] == pytest.approx(0.6) and path[1]["q"] == pytest.approx(0.7)
  assert path[0]["critic"]["orm"] is None and path[1]["critic"]["orm"] == pytest.approx(0.95)
  assert path[1]["critic"]["prm"] is None and path[1]["terminal"]
  assert tr.path_from_tree(tree, 0, 0, tok) == []
  assert tr.path_from_tree(tree, 0, 1)[0]["option"] == " ".join(str(i) for i in text[:7])
  r = _record()
  r["path"] = path
  tr.validate_record(r)
