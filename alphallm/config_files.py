"""Loading experiment config files by path.

Config files under ``experiments/`` are not a package: absl's config flag
loads them by path, and a config that builds on another (a paper config on
``experiments/paper/common.py``, paper_small on ``experiments/quickstart.py``)
loads it the same way, relative to its own file.
"""

from __future__ import annotations

import importlib.util
import os
import types


def load(path: str, name: str | None = None) -> types.ModuleType:
  """The Python file at ``path`` as a fresh module (a clear error if it is missing)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} does not exist")
  name = name or "_alphallm_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_sibling(this_file: str, filename: str) -> types.ModuleType:
  """``filename`` in the directory of ``this_file`` (pass ``__file__``)."""
  return load(os.path.join(os.path.dirname(os.path.abspath(this_file)), filename))
