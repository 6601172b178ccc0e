"""python -m bench's batch line: the batch job's images/s against the in-process ceiling of its runtime."""

from __future__ import annotations

import pytest

from bench.batch import TARGET, BatchRun, _summary
from bench.inprocess import PipelineRun, Rate, RuntimeCeiling
from bench.report import Results, console_summary, targets


def _results(batch: BatchRun | None) -> Results:
    overlapped = PipelineRun("overlapped", 1, 2, Rate(2000, 10.0))
    ceiling = RuntimeCeiling("openvino", 2, model={1: Rate(3000, 10.0)}, pipeline=[overlapped])
    return Results(command="", started="", options={}, machine={}, ceilings={"openvino": ceiling}, batch=batch)


@pytest.mark.parametrize(("seconds", "met"), [(2000 / 180, True), (2000 / 179.9, False), (5.0, True)])
def test_the_batch_target_is_met_at_nine_tenths_of_the_ceiling(seconds: float, met: bool) -> None:
    run = BatchRun("openvino", 2000, seconds, 1.0, seconds + 3, 0)
    (found,) = [t for t in targets(_results(run)) if t.name.startswith("batch job")]
    assert found.met is met
    assert found.required == f">= {TARGET}x"
    assert "/ 200.0 images/s" in found.measured
    assert "batch job (openvino, one task)" in console_summary(_results(run))


def test_no_batch_run_no_batch_target() -> None:
    assert not [t for t in targets(_results(None)) if t.name.startswith("batch job")]
    other_runtime = BatchRun("onnx", 10, 1.0, 1.0, 2.0, 0)  # its ceiling was not measured
    assert not [t for t in targets(_results(other_runtime)) if t.name.startswith("batch job")]


def test_the_summary_is_read_from_the_jobs_last_log_line() -> None:
    lines = [
        '{"message": "task starting", "to_do": 3}',
        "not json",
        '{"message": "batch task finished", "classified": 3, "seconds": 0.5}',
    ]
    assert _summary("\n".join(lines))["classified"] == 3
    with pytest.raises(RuntimeError, match="no summary line"):
        _summary('{"message": "batch task stopped"}')
