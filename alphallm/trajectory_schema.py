"""The trajectory record schema: validation, building and encoding of records.

One record is one self-generated search trajectory (``alphallm.trajectories``
stores them in shards). Everything here is pure: no file is touched.

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
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from alphallm.tasks.base import Problem

SCHEMA_VERSION = 1


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
  try:
    return text.encode("utf-8")
  except UnicodeEncodeError:
    key = surrogate_key(record) or "?"
    raise SchemaError(f"{where}: key {key!r} holds a lone surrogate (not encodable as "
                      "UTF-8; e.g. an escaped \\ud800 in a dataset file)") from None


def surrogate_key(obj: Any, prefix: str = "") -> str | None:
  """The dotted key of the first string in ``obj`` with a lone surrogate, or None."""
  if isinstance(obj, str):
    return prefix or "(value)" if any("\ud800" <= c <= "\udfff" for c in obj) else None
  items = (obj.items() if isinstance(obj, Mapping) else
           ((f"[{i}]", v) for i, v in enumerate(obj)) if isinstance(obj, list) else ())
  for k, v in items:
    name = f"{prefix}{k}" if str(k).startswith("[") else (f"{prefix}.{k}" if prefix else str(k))
    found = surrogate_key(k, name) if isinstance(k, str) and surrogate_key(k) else None
    found = found or surrogate_key(v, name)
    if found:
      return found
  return None


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
