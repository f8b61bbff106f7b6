import json

import pytest

from alphallm.metrics import MetricWriter


def test_records_dedupe_on_resume_and_tensorboard_files(tmp_path):
  w = MetricWriter(str(tmp_path), flush_every=2)
  w.write("sft", 1, {"loss": 2.0})
  w.write("sft", 2, {"loss": 1.0})
  w.close()
  w = MetricWriter(str(tmp_path))
  w.write("sft", 2, {"loss": 0.5})  # a resumed run redoes step 2
  w.write("eval/greedy", 0, {"accuracy": 0.25})
  w.close()
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [(r["tag"], r["step"]) for r in lines] == [("sft", 1), ("sft", 2), ("eval/greedy", 0)]
  assert lines[1]["loss"] == 0.5
  assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())


def test_malformed_metrics_file_names_line(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"tag": "a", "step": 1}\n{oops\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
    MetricWriter(str(tmp_path))
