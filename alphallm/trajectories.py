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

The record schema (and building, validating and encoding records) is
``alphallm.trajectory_schema``; its public names are importable from here.

Writing and crash safety
------------------------
``write_shard`` validates every record first (errors name the record index
and the key), writes a hidden temporary file in the destination directory
(``.<name>.<random>.tmp``), fsyncs it, checks it reads back, records its
checksum in ``<shard>.sha256`` (next to it, written atomically just before
the shard), then ``os.replace``-s it into place and fsyncs the directory. A
shard is therefore either fully present, with its checksum, or absent; an
interrupted write leaves at most a hidden temporary file, which
``TrajectoryStore.cleanup_temp`` (or ``Workdir.recover``) removes and which
no reader ever looks at, and perhaps the checksum of the shard it was about
to write, which the redone write replaces. (Overwriting an existing shard
replaces its checksum first: a kill between the two renames leaves a
mismatch that is reported, not read.)

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

Checksums and manifests
-----------------------
``<shard>.sha256`` is ``{"format": 1, "sha256": ..., "records": n, "bytes": b}``
of the shard file. Every read verifies it (``read_shard(verify=None)``
verifies when it exists; ``TrajectoryStore`` reads require it): a mismatch is
a ``TrajectoryFileError`` naming the shard. A phase that consumes shards
records what it read with ``write_manifest(path, shard_paths)`` (each shard's
relative path, record count and sha256); ``verify_manifest(path)`` and
``read_manifest_records(path)`` then raise ``ManifestError`` naming a shard
that is missing or changed, so a resumed phase never trains on less (or other)
data than it did.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fnmatch
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from array_record.python import array_record_data_source
from array_record.python import array_record_module

from alphallm import io_utils
# The schema's public names, importable from here as before the split.
from alphallm.trajectory_schema import (  # noqa: F401  pylint: disable=unused-import
    RECORD_SCHEMA, SCHEMA_VERSION, SchemaError, TrajectoryFileError, _is_int, decode_record,
    encode_record, make_node, make_record, path_from_tree, record_problem, record_problems,
    surrogate_key, to_python, validate_record)

SHARD_SUFFIX = ".array_record"
CHECKSUM_SUFFIX = ".sha256"
CHECKSUM_FORMAT = 1
MANIFEST_FORMAT = 1
# group_size:1 is what Grain / TFDS random access expects.
WRITER_OPTIONS = "group_size:1"
READER_OPTIONS = "readahead_buffer_size:0"
_SHARD_RE = re.compile(r"round([0-9]{1,9})-shard([0-9]{5})\.array_record", re.ASCII)
_TEMP_RE = re.compile(r"\.round[0-9]{1,9}-shard[0-9]{5}\.array_record\..+\.tmp", re.ASCII)
_MAX_SHARD_INDEX = 99_999


class ManifestError(TrajectoryFileError):
  """A phase's recorded inputs are missing or changed (the message names the shard)."""


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
  io_utils.check_write(path)
  directory = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
  except OSError as e:
    raise io_utils.translate_os_error(e, path) from None
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
    # The checksum first: a shard is never in place without it.
    io_utils.atomic_write_json(checksum_path(path), checksum_record(tmp, written))
    os.replace(tmp, path)
  except OSError as e:
    _unlink(tmp)
    raise io_utils.translate_os_error(e, path) from None
  except RuntimeError as e:  # array_record's writer reports I/O failures so
    _unlink(tmp)
    if "No space left" in str(e) or "Read-only file system" in str(e):
      code = errno.ENOSPC if "No space" in str(e) else errno.EROFS
      raise io_utils.WriteError(
          code, io_utils.describe_os_error(OSError(code, str(e)), path)) from None
    raise
  except BaseException:
    _unlink(tmp)
    raise
  _fsync_dir(directory)
  return len(payloads)


def _unlink(path: str) -> None:
  try:
    if os.path.exists(path):
      os.unlink(path)
  except OSError:
    pass


def checksum_path(shard_path: str) -> str:
  """``<shard>.sha256``: the shard's checksum record."""
  return os.fspath(shard_path) + CHECKSUM_SUFFIX


file_sha256 = io_utils.file_sha256


def checksum_record(path: str, num_records: int) -> dict[str, Any]:
  """The checksum record of the shard file at ``path`` holding ``num_records`` records."""
  return {"format": CHECKSUM_FORMAT, "sha256": file_sha256(path), "records": int(num_records),
          "bytes": os.path.getsize(path)}


def verify_checksum(path: str, required: bool = True) -> dict[str, Any] | None:
  """Checks the shard at ``path`` against ``<shard>.sha256``; returns the record.

  Returns None when there is no checksum record and ``required`` is False.

  Raises:
    TrajectoryFileError: naming the shard, when its checksum record is
      missing (and ``required``), unreadable, or does not match the file.
  """
  cpath = checksum_path(path)
  if not os.path.exists(cpath):
    if required:
      raise TrajectoryFileError(f"{path}: no checksum record {os.path.basename(cpath)} "
                                "(not written by this alphallm's store, or damaged)")
    return None
  try:
    record = io_utils.read_json(cpath)
  except (OSError, ValueError) as e:
    raise TrajectoryFileError(f"{path}: unreadable checksum record: {e}") from None
  if not (isinstance(record, dict) and isinstance(record.get("sha256"), str)
          and _is_int(record.get("records"))):
    raise TrajectoryFileError(f"{path}: malformed checksum record {cpath}")
  got = file_sha256(path)
  if got != record["sha256"]:
    raise TrajectoryFileError(f"{path}: checksum mismatch (sha256 {got[:12]}..., recorded "
                              f"{record['sha256'][:12]}... in {os.path.basename(cpath)}): "
                              "the shard changed after it was written")
  return record


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


def read_shard(path: str, verify: bool | None = None) -> list[dict[str, Any]]:
  """Every record of one shard, validated.

  ``verify``: True requires the shard's checksum record and checks it, None
  (default) checks it when it exists, False skips it.

  Raises:
    FileNotFoundError: no file at ``path``.
    TrajectoryFileError: the file is not an array_record file, is truncated
      or corrupt, or a record is not a schema-valid JSON trajectory (the
      message names the file and the record index).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no such trajectory shard: {path}")
  checksum = verify_checksum(path, required=bool(verify)) if verify is not False else None
  payloads = _read_payloads(path)
  if checksum is not None and len(payloads) != checksum["records"]:
    raise TrajectoryFileError(f"{path}: {len(payloads)} records but its checksum record "
                              f"says {checksum['records']}")
  return [decode_record(p, f"{path}: record {i}") for i, p in enumerate(payloads)]


def _natural_key(name: str) -> list[Any]:
  return [int(t) if t.isdigit() else t for t in re.split(r"([0-9]+)", name)]


def list_dir(directory: str, pattern: str = "*" + SHARD_SUFFIX) -> list[str]:
  """Paths of the non-hidden files in ``directory`` matching ``pattern``, in natural order.

  Checksum records (``*.sha256``) are never listed.
  """
  names = [n for n in os.listdir(directory)
           if not n.startswith(".") and not n.endswith(CHECKSUM_SUFFIX)
           and fnmatch.fnmatchcase(n, pattern)
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
  that an unreadable one is named at construction, and checked against its
  checksum record (``verify`` as in ``read_shard``).
  """

  def __init__(self, paths: Sequence[str], verify: bool | None = None):
    self.paths = [os.fspath(p) for p in paths]
    self._ends: list[int] = []
    total = 0
    for path in self.paths:
      if not os.path.isfile(path):
        raise FileNotFoundError(f"no such trajectory shard: {path}")
      checksum = verify_checksum(path, required=bool(verify)) if verify is not False else None
      n = _num_records(path)
      if checksum is not None and n != checksum["records"]:
        raise TrajectoryFileError(f"{path}: {n} records but its checksum record says "
                                  f"{checksum['records']}")
      total += n
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
      out.extend(read_shard(path, verify=True))
    return out

  def data_source(self, round_index: int) -> TrajectoryDataSource:
    """Random access to ``round_index``'s records (see ``TrajectoryDataSource``)."""
    return TrajectoryDataSource(self.shard_paths(round_index), verify=True)

  def write_manifest(self, path: str, rounds: Sequence[int], **extra: Any) -> dict[str, Any]:
    """``write_manifest(path, <every complete shard of rounds>)``: what a phase consumed."""
    return write_manifest(path, [p for r in rounds for p in self.shard_paths(r)], **extra)

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


# ----------------------------------------------------------------------------
# Manifests: the shards a phase consumed.


def shard_entry(path: str, manifest_dir: str) -> dict[str, Any]:
  """``{"path", "records", "sha256"}`` of a shard, read and verified in full."""
  records = read_shard(path, verify=True)
  return {"path": os.path.relpath(os.path.abspath(path), manifest_dir).replace(os.sep, "/"),
          "records": len(records), "sha256": file_sha256(path)}


def write_manifest(path: str, shard_paths: Sequence[str], **extra: Any) -> dict[str, Any]:
  """Records the shards a phase consumed in ``path`` (atomic JSON); returns the manifest.

  ``{"format": 1, "shards": [{"path": relative to the manifest's directory,
  "records": n, "sha256": ...}], "total_records": N, **extra}``. Every shard
  is verified against its checksum record first.
  """
  manifest_dir = os.path.dirname(os.path.abspath(path))
  shards = [shard_entry(p, manifest_dir) for p in shard_paths]
  manifest = {"format": MANIFEST_FORMAT, **extra, "shards": shards,
              "total_records": sum(e["records"] for e in shards)}
  io_utils.atomic_write_json(path, manifest)
  return manifest


def read_manifest(path: str) -> dict[str, Any]:
  """A manifest file, checked for shape; ``ManifestError`` naming the file otherwise."""
  try:
    manifest = io_utils.read_json(path)
  except FileNotFoundError:
    raise ManifestError(f"{path}: no such manifest") from None
  except (OSError, ValueError) as e:
    raise ManifestError(f"{path}: unreadable manifest: {e}") from None
  shards = manifest.get("shards") if isinstance(manifest, dict) else None
  if not isinstance(shards, list) or not all(
      isinstance(e, dict) and isinstance(e.get("path"), str) and _is_int(e.get("records"))
      and isinstance(e.get("sha256"), str) for e in shards):
    raise ManifestError(f"{path}: malformed manifest (needs 'shards': [{{path, records, "
                        "sha256}}])")
  return manifest


def verify_manifest(path: str) -> list[str]:
  """The absolute shard paths of a manifest, after checking each is present and unchanged.

  Raises:
    ManifestError: one line naming the manifest and the first shard that is
      missing, whose content (sha256) changed, or whose record count differs.
  """
  manifest = read_manifest(path)
  manifest_dir = os.path.dirname(os.path.abspath(path))
  out = []
  for entry in manifest["shards"]:
    shard = os.path.normpath(os.path.join(manifest_dir, entry["path"]))
    if not os.path.isfile(shard):
      raise ManifestError(f"{path}: input shard {shard} is missing ({entry['records']} "
                          "records consumed by this phase)")
    got = file_sha256(shard)
    if got != entry["sha256"]:
      raise ManifestError(f"{path}: input shard {shard} changed since this phase consumed it "
                          f"(sha256 {got[:12]}..., recorded {entry['sha256'][:12]}...)")
    out.append(shard)
  return out


def read_manifest_records(path: str) -> list[dict[str, Any]]:
  """The records of a manifest's shards, in order; ``ManifestError`` as ``verify_manifest``."""
  manifest = read_manifest(path)
  out: list[dict[str, Any]] = []
  for shard, entry in zip(verify_manifest(path), manifest["shards"]):
    records = read_shard(shard, verify=True)
    if len(records) != entry["records"]:
      raise ManifestError(f"{path}: input shard {shard} has {len(records)} records, "
                          f"{entry['records']} were consumed")
    out.extend(records)
  return out
