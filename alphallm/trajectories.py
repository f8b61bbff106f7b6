"""On-disk storage of self-generated search trajectories.

Each round of the loop (``PAPER.md``, "The loop") searches on imagined
prompts and keeps the trajectory with the best critic score at its leaf. This
module stores those trajectories so that they can be inspected, reused (to
fine-tune the policy, to train critics, to compare rounds) and resumed after a
crash, without TensorFlow.

Format
------
ArrayRecord files (``*.array_record``, the random-access container TFDS and
Grain read). One record is one trajectory: a JSON object encoded as UTF-8
(``json.dumps`` with sorted keys, no NaN/Infinity). Files are written with
``group_size:1`` so that ``array_record.python.array_record_data_source.
ArrayRecordDataSource`` (what ``tfds.data_sources`` wraps; it needs no
TensorFlow) gives fast random access. To look at one by hand::

  from array_record.python.array_record_data_source import ArrayRecordDataSource
  ds = ArrayRecordDataSource(["round1-shard00000.array_record"])
  json.loads(ds[0])

Schema (``SCHEMA_VERSION = 1``)
-------------------------------
Every key below is required unless marked optional; no other key is allowed
(put free-form additions under ``extra``). ``float`` accepts ints and must be
finite; ``float?`` / ``bool?`` also accept ``null``; ``int`` means a
non-negative integer (``bool`` is not an int here)::

  schema_version: int        # == SCHEMA_VERSION
  round: int                 # the self-improvement round k (0 = warm start)
  task: str                  # Task.name, e.g. "arithmetic"
  problem:                   # Problem.to_json() plus its uid
    question: str
    answer: str              # the answer key (the search never saw it)
    data: object             # task-specific JSON (may carry "origin", see imagination.py)
    uid: str                 # == Problem.uid, checked
  prompt: str                # the text the policy was conditioned on (Task.prompt)
  completion: str            # the chosen completion text
  path: list of node         # root's child first, the chosen node last (root left out)
    option: str              # the text this node's option added
    visits: int              # N of the node
    q: float                 # Q of the edge from its parent, as the search saw it
    prior: float             # pi(option | parent), from the parent's prior logits
    value: float             # the node's mean backed-up value (mctx node_values)
    critic:
      value: float?          # value head v(s)
      prm: float?            # process reward of the step
      orm: float?            # outcome reward (terminal nodes / fast rollouts)
    score: float?            # node score s = b_v v + b_PRM PRM + b_ORM ORM
    terminal: bool
  selection: str             # how the completion was chosen ("best_leaf", ...)
  final:
    critic_score: float?     # the critic score used to pick among trajectories
    orm_score: float?        # learned ORM score of the completion (gamma threshold)
    verified: bool?          # exact verifier outcome, null if not checked
    kept: bool               # passed the collect step (used for fine-tuning)
  compute:
    prompt_tokens: int
    completion_tokens: int   # tokens of the chosen completion
    generated_tokens: int    # all tokens the search generated for this prompt
    forward_passes: int      # per-problem model evaluations (alphallm.decoding)
  extra: object              # optional, free-form JSON

The concatenated ``option`` texts are a prefix of ``completion`` (the rest,
if any, was completed greedily after selection). ``path`` is empty for
decoders without a tree (e.g. plain sampling).

``path_from_tree`` builds ``path`` from a finished search
(``search.selection.TreeArrays``) and ``make_record`` the whole record,
converting numpy/JAX scalars and integral float counts.

Writing and crash safety
------------------------
``write_shard`` validates every record first (errors name the record index
and the key), writes a hidden temporary file in the destination directory
(``.<name>.<random>.tmp``), fsyncs it, checks it reads back, then
``os.replace``-s it into place and fsyncs the directory. A shard is therefore
either fully present or absent; an interrupted write leaves at most a hidden
temporary file, which ``TrajectoryStore.cleanup_temp`` removes and which no
reader ever looks at.

``TrajectoryStore`` names shards ``round{r}-shard{i:05d}.array_record``: the
caller maps work chunk ``i`` of round ``r`` to shard ``i`` deterministically,
and on resume redoes exactly the chunks that ``missing_shards`` reports, so
no record is lost or written twice.

Other files
-----------
``TrajectoryStore`` ignores every file whose name is not exactly a shard name
(notes, checkpoints, temporaries, ``round1-shard1.array_record`` with the
wrong padding). ``read_dir`` reads every non-hidden file matching its glob
pattern and raises ``TrajectoryFileError`` naming the first one that is not a
valid trajectory shard. A file named like a shard but holding foreign or
corrupt data is reported as complete by ``completed_shards`` (that only looks
at names) and raises ``TrajectoryFileError`` naming it when read.
"""

from __future__ import annotations

import bisect
import contextlib
import fnmatch
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from array_record.python import array_record_data_source
from array_record.python import array_record_module

from alphallm.tasks.base import Problem

SCHEMA_VERSION = 1
SHARD_SUFFIX = ".array_record"
# group_size:1 is what Grain / TFDS random access expects.
WRITER_OPTIONS = "group_size:1"
READER_OPTIONS = "readahead_buffer_size:0"
_SHARD_RE = re.compile(r"round([0-9]{1,9})-shard([0-9]{5})\.array_record", re.ASCII)
_TEMP_RE = re.compile(r"\.round[0-9]{1,9}-shard[0-9]{5}\.array_record\..+\.tmp", re.ASCII)
_MAX_SHARD_INDEX = 99_999


class SchemaError(ValueError):
  """A record does not follow the trajectory schema."""


class TrajectoryFileError(ValueError):
  """A file is not a readable trajectory shard (corrupt, truncated or foreign)."""


# ----------------------------------------------------------------------------
# Schema and validation.

def _is_int(x: object) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _check_str(x: object) -> str | None:
  return None if isinstance(x, str) else "a string"


def _check_count(x: object) -> str | None:
  return None if _is_int(x) and x >= 0 else "a non-negative int"


def _check_float(x: object) -> str | None:
  ok = _is_int(x) or (isinstance(x, float) and math.isfinite(x))
  return None if ok else "a finite number"


def _check_opt_float(x: object) -> str | None:
  return None if x is None else (
      None if _check_float(x) is None else "a finite number or null")


def _check_bool(x: object) -> str | None:
  return None if isinstance(x, bool) else "a bool"


def _check_opt_bool(x: object) -> str | None:
  return None if x is None or isinstance(x, bool) else "a bool or null"


def _check_object(x: object) -> str | None:
  ok = isinstance(x, dict) and all(isinstance(k, str) for k in x)
  return None if ok else "a JSON object (dict with str keys)"


def _check_version(x: object) -> str | None:
  if _is_int(x) and x == SCHEMA_VERSION:
    return None
  return f"{SCHEMA_VERSION} (this code reads schema version {SCHEMA_VERSION} only)"


_NODE_SCHEMA: dict[str, Any] = {
    "option": _check_str,
    "visits": _check_count,
    "q": _check_float,
    "prior": _check_float,
    "value": _check_float,
    "critic": {"value": _check_opt_float, "prm": _check_opt_float, "orm": _check_opt_float},
    "score": _check_opt_float,
    "terminal": _check_bool,
}

# A list value in the schema means "a list of objects of this schema".
RECORD_SCHEMA: dict[str, Any] = {
    "schema_version": _check_version,
    "round": _check_count,
    "task": _check_str,
    "problem": {"question": _check_str, "answer": _check_str, "data": _check_object,
                "uid": _check_str},
    "prompt": _check_str,
    "completion": _check_str,
    "path": [_NODE_SCHEMA],
    "selection": _check_str,
    "final": {"critic_score": _check_opt_float, "orm_score": _check_opt_float,
              "verified": _check_opt_bool, "kept": _check_bool},
    "compute": {"prompt_tokens": _check_count, "completion_tokens": _check_count,
                "generated_tokens": _check_count, "forward_passes": _check_count},
}
_OPTIONAL: dict[str, Callable[[object], str | None]] = {"extra": _check_object}


def _type_name(x: object) -> str:
  return "null" if x is None else type(x).__name__


def _schema_problems(obj: object, schema: Mapping[str, Any], prefix: str,
                     optional: Mapping[str, Any] | None = None) -> list[str]:
  """Human-readable violations of ``schema`` by ``obj`` (empty if none)."""
  if not isinstance(obj, dict):
    name = f"key {prefix.rstrip('.')!r}" if prefix else "record"
    return [f"{name} must be an object, got {_type_name(obj)}"]
  optional = optional or {}
  out = []
  for key in obj:
    if key not in schema and key not in optional:
      hint = " (put free-form data under 'extra')" if not prefix else ""
      out.append(f"unknown key {prefix + str(key)!r}{hint}")
  for key, spec in schema.items():
    name = prefix + key
    if key not in obj:
      out.append(f"missing key {name!r}")
      continue
    out.extend(_value_problems(obj[key], spec, name))
  for key, spec in optional.items():
    if key in obj:
      out.extend(_value_problems(obj[key], spec, prefix + key))
  return out


def _value_problems(value: object, spec: Any, name: str) -> list[str]:
  if isinstance(spec, dict):
    return _schema_problems(value, spec, name + ".")
  if isinstance(spec, list):
    if not isinstance(value, list):
      return [f"key {name!r} must be a list, got {_type_name(value)}"]
    out = []
    for i, item in enumerate(value):
      out.extend(_schema_problems(item, spec[0], f"{name}[{i}]."))
    return out
  expected = spec(value)
  if expected is None:
    return []
  return [f"key {name!r} must be {expected}, got {_type_name(value)} {value!r:.60}"]


def record_problems(record: object) -> list[str]:
  """Every schema violation of ``record`` (empty when it is valid)."""
  out = _schema_problems(record, RECORD_SCHEMA, "", _OPTIONAL)
  if not out:
    problem = record["problem"]
    uid = Problem(question=problem["question"], answer=problem["answer"]).uid
    if problem["uid"] != uid:
      out.append(f"key 'problem.uid' is {problem['uid']!r} but the question's uid is {uid!r}")
  return out


def validate_record(record: object, where: str = "record") -> None:
  """Raises ``SchemaError`` naming ``where`` and the first bad keys."""
  problems = record_problems(record)
  if problems:
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    raise SchemaError(f"{where}: " + "; ".join(problems[:3]) + more)


# ----------------------------------------------------------------------------
# Building records.

def to_python(x: Any) -> Any:
  """``x`` with numpy/JAX scalars and arrays and tuples turned into plain JSON types."""
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray) or (hasattr(x, "__array__") and hasattr(x, "dtype")):
    return to_python(np.asarray(x).tolist())
  if isinstance(x, Mapping):
    return {str(k): to_python(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_python(v) for v in x]
  return x


def make_node(*, option: str, visits: int, q: float, prior: float, value: float,
              critic_value: float | None = None, prm: float | None = None,
              orm: float | None = None, score: float | None = None,
              terminal: bool = False) -> dict[str, Any]:
  """One ``path`` entry (numpy scalars accepted; see the module doc)."""
  return to_python({
      "option": option, "visits": visits, "q": q, "prior": prior, "value": value,
      "critic": {"value": critic_value, "prm": prm, "orm": orm},
      "score": score, "terminal": terminal})


def path_from_tree(tree: Any, b: int, node: int, tokenizer: Any = None) -> list[dict[str, Any]]:
  """The ``path`` of the chosen ``node`` of problem ``b`` of a finished search.

  Args:
    tree: an ``alphallm.search.selection.TreeArrays`` (any object with its
      numpy fields: parents, action_from_parent, node_visits, node_values,
      qvalues, children_prior_logits, tokens, length, value, prm, orm,
      has_orm, score, terminal).
    b: the problem's batch row.
    node: the chosen node (0, the root, gives an empty path).
    tokenizer: decodes each option's ids; without one an option is its ids
      written as space-separated integers.

  Returns:
    Nodes from the root's child down to ``node``, as in the schema. Critic
    fields that are not finite (or an ORM term the node lacks) are null.
  """
  chain = []
  n = int(node)
  while n > 0:
    chain.append(n)
    n = int(tree.parents[b, n])
  out = []
  for n in reversed(chain):
    parent = int(tree.parents[b, n])
    a = int(tree.action_from_parent[b, n])
    start, end = int(tree.length[b, parent]), int(tree.length[b, n])
    ids = np.asarray(tree.tokens[b, n, start:end])
    option = (tokenizer.decode([int(i) for i in ids]) if tokenizer is not None
              else " ".join(str(int(i)) for i in ids))
    out.append(make_node(
        option=option, visits=int(tree.node_visits[b, n]),
        q=float(tree.qvalues[b, parent, a]),
        prior=_softmax_at(np.asarray(tree.children_prior_logits[b, parent], np.float64), a),
        value=float(tree.node_values[b, n]),
        critic_value=_finite_or_none(tree.value[b, n]),
        prm=_finite_or_none(tree.prm[b, n]),
        orm=_finite_or_none(tree.orm[b, n]) if bool(tree.has_orm[b, n]) else None,
        score=_finite_or_none(tree.score[b, n]),
        terminal=bool(tree.terminal[b, n])))
  return out


def _softmax_at(logits: np.ndarray, i: int) -> float:
  finite = np.isfinite(logits)
  if not finite[i]:
    return 0.0
  z = np.where(finite, np.exp(logits - logits[finite].max()), 0.0)
  return float(z[i] / z.sum())


def _finite_or_none(x: Any) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None


def make_record(*, round_index: int, task: str, problem: Problem, prompt: str, completion: str,
                path: Sequence[Mapping[str, Any]], selection: str,
                critic_score: float | None, orm_score: float | None,
                verified: bool | None, kept: bool, prompt_tokens: int,
                completion_tokens: int, generated_tokens: int, forward_passes: int,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """A validated trajectory record (``round_index`` is stored as ``round``).

  Numpy scalars are converted to Python numbers; token counts and forward
  passes given as integral floats (the decoders' accounting is float32) are
  rounded to ints. Raises ``SchemaError`` on anything else off-schema.
  """
  counts = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "generated_tokens": generated_tokens, "forward_passes": forward_passes}
  counts = {k: _integral(v) for k, v in to_python(counts).items()}
  record = {
      "schema_version": SCHEMA_VERSION,
      "round": round_index,
      "task": task,
      "problem": {**problem.to_json(), "uid": problem.uid},
      "prompt": prompt,
      "completion": completion,
      "path": list(path),
      "selection": selection,
      "final": {"critic_score": critic_score, "orm_score": orm_score,
                "verified": verified, "kept": kept},
      "compute": counts,
  }
  if extra is not None:
    record["extra"] = extra
  record = to_python(record)
  validate_record(record)
  return record


def _integral(x: Any) -> Any:
  if isinstance(x, float) and math.isfinite(x) and x == int(x):
    return int(x)
  return x


def record_problem(record: Mapping[str, Any]) -> Problem:
  """The ``Problem`` a record was searched on."""
  return Problem.from_json(record["problem"])


# ----------------------------------------------------------------------------
# Encoding.

def encode_record(record: Mapping[str, Any], where: str = "record") -> bytes:
  """Validates ``record`` and returns its UTF-8 JSON bytes."""
  validate_record(record, where)
  try:
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":"))
  except (TypeError, ValueError) as e:
    raise SchemaError(f"{where}: not JSON-serialisable: {e}") from e
  return text.encode("utf-8")


def decode_record(data: bytes, where: str = "record") -> dict[str, Any]:
  """Parses and validates one stored record; errors name ``where``."""
  try:
    record = json.loads(bytes(data).decode("utf-8"))
  except UnicodeDecodeError as e:
    raise TrajectoryFileError(f"{where}: not UTF-8 text: {e}") from e
  except json.JSONDecodeError as e:
    raise TrajectoryFileError(f"{where}: not a JSON trajectory: {e}") from e
  try:
    validate_record(record, where)
  except SchemaError as e:
    raise TrajectoryFileError(str(e)) from e
  return record


# ----------------------------------------------------------------------------
# Shards.

def write_shard(path: str, records: Iterable[Mapping[str, Any]]) -> int:
  """Atomically writes ``records`` as one array_record file at ``path``.

  Every record is validated and encoded before anything touches the disk.
  Then a temporary file in the same directory is written, fsynced and read
  back, and renamed over ``path`` (``os.replace``); the directory is fsynced.
  On any failure the temporary file is removed and ``path`` is unchanged.

  Returns:
    The number of records written.

  Raises:
    SchemaError: a record is off-schema (the message names its index and key).
  """
  payloads = [encode_record(r, f"record {i}") for i, r in enumerate(records)]
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                             dir=directory)
  os.close(fd)
  try:
    writer = array_record_module.ArrayRecordWriter(tmp, WRITER_OPTIONS)
    try:
      for payload in payloads:
        writer.write(payload)
    finally:
      writer.close()
    _fsync_path(tmp, os.O_RDONLY)
    written = len(_read_payloads(tmp))
    if written != len(payloads):
      raise OSError(f"{tmp}: wrote {len(payloads)} records but read back {written}")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  _fsync_dir(directory)
  return len(payloads)


def _fsync_path(path: str, flags: int) -> None:
  fd = os.open(path, flags)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _fsync_dir(directory: str) -> None:
  try:
    _fsync_path(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
  except OSError:
    pass  # Some filesystems cannot fsync a directory; the rename still happened.


@contextlib.contextmanager
def _open_reader(path: str) -> Iterator[Any]:
  """An open ``ArrayRecordReader``; any failure is a ``TrajectoryFileError`` naming ``path``."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no such trajectory shard: {path}")
  try:
    reader = array_record_module.ArrayRecordReader(path, READER_OPTIONS)
  except RuntimeError as e:
    raise TrajectoryFileError(f"{path}: not a readable array_record file: {e}") from e
  failed = False
  try:
    if not reader.ok():
      raise TrajectoryFileError(f"{path}: not a readable array_record file "
                                "(truncated, corrupt or foreign)")
    yield reader
    if not reader.ok():
      raise TrajectoryFileError(f"{path}: corrupt array_record file")
  except RuntimeError as e:
    failed = True
    raise TrajectoryFileError(f"{path}: corrupt array_record file: {e}") from e
  except BaseException:
    failed = True
    raise
  finally:
    try:
      reader.close()  # Raises the reader's failure status, if any.
    except RuntimeError as e:
      if not failed:
        raise TrajectoryFileError(f"{path}: corrupt array_record file: {e}") from e


def _read_payloads(path: str) -> list[bytes]:
  """The raw records of an array_record file; ``TrajectoryFileError`` if unreadable."""
  with _open_reader(path) as reader:
    return list(reader.read_all())


def read_shard(path: str) -> list[dict[str, Any]]:
  """Every record of one shard, validated.

  Raises:
    FileNotFoundError: no file at ``path``.
    TrajectoryFileError: the file is not an array_record file, is truncated
      or corrupt, or a record is not a schema-valid JSON trajectory (the
      message names the file and the record index).
  """
  return [decode_record(p, f"{path}: record {i}") for i, p in enumerate(_read_payloads(path))]


def _natural_key(name: str) -> list[Any]:
  return [int(t) if t.isdigit() else t for t in re.split(r"([0-9]+)", name)]


def list_dir(directory: str, pattern: str = "*" + SHARD_SUFFIX) -> list[str]:
  """Paths of the non-hidden files in ``directory`` matching ``pattern``, in natural order."""
  names = [n for n in os.listdir(directory)
           if not n.startswith(".") and fnmatch.fnmatchcase(n, pattern)
           and os.path.isfile(os.path.join(directory, n))]
  return [os.path.join(directory, n) for n in sorted(names, key=_natural_key)]


def read_dir(directory: str, pattern: str = "*" + SHARD_SUFFIX) -> list[dict[str, Any]]:
  """The records of every matching file (see ``list_dir``), file after file.

  Hidden files (temporaries) are skipped. Any matching file that is not a
  valid trajectory shard raises ``TrajectoryFileError`` naming it: narrow
  ``pattern`` to leave foreign files out.
  """
  out: list[dict[str, Any]] = []
  for path in list_dir(directory, pattern):
    out.extend(read_shard(path))
  return out


class TrajectoryDataSource:
  """Random access to the records of shard files, via ``ArrayRecordDataSource``.

  ``len(source)`` records; ``source[i]`` is the validated dict of record
  ``i`` (files in the given order). Every file is opened once up front so
  that an unreadable one is named at construction.
  """

  def __init__(self, paths: Sequence[str]):
    self.paths = [os.fspath(p) for p in paths]
    self._ends: list[int] = []
    total = 0
    for path in self.paths:
      total += _num_records(path)
      self._ends.append(total)
    self._source = (array_record_data_source.ArrayRecordDataSource(self.paths)
                    if self.paths else None)

  def __len__(self) -> int:
    return self._ends[-1] if self._ends else 0

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not -len(self) <= index < len(self):
      raise IndexError(f"record {index} out of range for {len(self)} records")
    index %= len(self)
    f = bisect.bisect_right(self._ends, index)
    local = index - (self._ends[f - 1] if f else 0)
    where = f"{self.paths[f]}: record {local}"
    try:
      payload = self._source[index]
    except RuntimeError as e:
      raise TrajectoryFileError(f"{where}: corrupt array_record file: {e}") from e
    return decode_record(payload, where)


def _num_records(path: str) -> int:
  with _open_reader(path) as reader:
    return int(reader.num_records())


# ----------------------------------------------------------------------------
# The store.

def shard_name(round_index: int, shard_index: int) -> str:
  """``round{r}-shard{i:05d}.array_record``."""
  if not _is_int(round_index) or round_index < 0:
    raise ValueError(f"round must be a non-negative int, got {round_index!r}")
  if not _is_int(shard_index) or not 0 <= shard_index <= _MAX_SHARD_INDEX:
    raise ValueError(f"shard index must be an int in [0, {_MAX_SHARD_INDEX}], "
                     f"got {shard_index!r}")
  return f"round{round_index}-shard{shard_index:05d}{SHARD_SUFFIX}"


def parse_shard_name(name: str) -> tuple[int, int] | None:
  """``(round, shard)`` of a shard file name, or None for any other name."""
  m = _SHARD_RE.fullmatch(name)
  if m is None or (len(m.group(1)) > 1 and m.group(1).startswith("0")):
    return None
  return int(m.group(1)), int(m.group(2))


class TrajectoryStore:
  """The trajectories of every round, as shards in one directory.

  Resume protocol: split round ``r``'s work into chunks deterministically,
  write chunk ``i`` with ``write_shard(r, i, records)``, and after a restart
  redo exactly ``missing_shards(r, num_chunks)``. Shards are written
  atomically, so each one is fully present or absent: nothing is lost and
  nothing is duplicated. One writer per shard at a time is assumed.
  """

  def __init__(self, directory: str):
    self.directory = os.fspath(directory)
    os.makedirs(self.directory, exist_ok=True)

  def shard_path(self, round_index: int, shard_index: int) -> str:
    return os.path.join(self.directory, shard_name(round_index, shard_index))

  def write_shard(self, round_index: int, shard_index: int,
                  records: Sequence[Mapping[str, Any]], *, overwrite: bool = False) -> str:
    """Atomically writes shard ``shard_index`` of ``round_index``; returns its path.

    Raises:
      FileExistsError: the shard is already complete and not ``overwrite``.
      SchemaError: a record is off-schema or belongs to another round.
    """
    path = self.shard_path(round_index, shard_index)
    records = list(records)
    for i, r in enumerate(records):
      if isinstance(r, Mapping) and "round" in r and r["round"] != round_index:
        raise SchemaError(f"record {i}: key 'round' is {r['round']!r} but the shard is "
                          f"for round {round_index}")
    if not overwrite and os.path.exists(path):
      raise FileExistsError(f"{path} is already complete; pass overwrite=True to replace it")
    write_shard(path, records)
    return path

  def _shards(self) -> list[tuple[int, int]]:
    out = []
    for name in os.listdir(self.directory):
      parsed = parse_shard_name(name)
      if parsed is not None and os.path.isfile(os.path.join(self.directory, name)):
        out.append(parsed)
    return sorted(out)

  def rounds(self) -> list[int]:
    """Rounds with at least one complete shard, ascending."""
    return sorted({r for r, _ in self._shards()})

  def completed_shards(self, round_index: int) -> list[int]:
    """Indices of the complete shards of ``round_index``, ascending."""
    return [i for r, i in self._shards() if r == round_index]

  def missing_shards(self, round_index: int, num_shards: int) -> list[int]:
    """Indices in ``range(num_shards)`` still to be written."""
    done = set(self.completed_shards(round_index))
    return [i for i in range(num_shards) if i not in done]

  def shard_paths(self, round_index: int) -> list[str]:
    return [self.shard_path(round_index, i) for i in self.completed_shards(round_index)]

  def records(self, round_index: int) -> list[dict[str, Any]]:
    """Every record of ``round_index``, shard after shard."""
    out: list[dict[str, Any]] = []
    for path in self.shard_paths(round_index):
      out.extend(read_shard(path))
    return out

  def data_source(self, round_index: int) -> TrajectoryDataSource:
    """Random access to ``round_index``'s records (see ``TrajectoryDataSource``)."""
    return TrajectoryDataSource(self.shard_paths(round_index))

  def cleanup_temp(self) -> list[str]:
    """Removes temporaries left by interrupted writes; returns their paths.

    Only call it when no write to this store is in progress.
    """
    removed = []
    for name in sorted(os.listdir(self.directory)):
      if _TEMP_RE.fullmatch(name):
        path = os.path.join(self.directory, name)
        os.unlink(path)
        removed.append(path)
    return removed
