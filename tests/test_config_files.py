"""Loading config files by path (``alphallm.config_files``)."""

import pytest

from alphallm import config_files


def test_load_and_load_sibling(tmp_path):
  (tmp_path / "common.py").write_text("VALUE = 41\n")
  (tmp_path / "exp.py").write_text(
      "from alphallm import config_files\n"
      "common = config_files.load_sibling(__file__, 'common.py')\n"
      "def get_config():\n  return common.VALUE + 1\n")
  assert config_files.load(str(tmp_path / "exp.py")).get_config() == 42
  with pytest.raises(FileNotFoundError, match="missing.py"):
    config_files.load(str(tmp_path / "missing.py"))
