"""The batch job decodes as the service does (same limits and budgets); what it does when the decoders are busy,
and when they cannot work at all."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.batch._job import BUSY_RETRIES, DecodersFailed, Task, decoder_settings
from backend.classifier import Classifier, DecoderBusy, PreparedImage
from backend.config import Settings
from backend.service import decoder_settings as service_decoder_settings

PREPARED = PreparedImage(np.zeros((224, 224, 3), np.uint8), "JPEG", 640, 480)


class FakePool:
    """A decoder pool that is busy ``busy`` times, then decodes; ``trouble`` is what its health check says."""

    def __init__(self, busy: int, trouble: str | None = None) -> None:
        self.busy = busy
        self.trouble = trouble
        self.calls = 0

    async def prepare(self, data: bytes) -> PreparedImage:
        self.calls += 1
        if self.calls <= self.busy:
            raise DecoderBusy("busy")
        return PREPARED

    def health(self, stall_s: float) -> str | None:
        return self.trouble


Prepare = Callable[[], Coroutine[Any, Any, PreparedImage]]


def _prepare(pool: FakePool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Prepare:
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("backend.batch._job.asyncio.sleep", no_wait)
    task = Task(Settings(), tmp_path, tmp_path / "out")
    return lambda: task._prepare(pool, b"jpeg")  # type: ignore[arg-type]


def test_a_busy_decoder_is_tried_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pool = FakePool(busy=BUSY_RETRIES)
    assert asyncio.run(_prepare(pool, monkeypatch, tmp_path)()) is PREPARED
    assert pool.calls == BUSY_RETRIES + 1


def test_an_image_the_decoders_stay_too_busy_for_is_recorded_as_decoder_busy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pool = FakePool(busy=BUSY_RETRIES + 1)
    with pytest.raises(DecoderBusy):
        asyncio.run(_prepare(pool, monkeypatch, tmp_path)())
    assert pool.calls == BUSY_RETRIES + 1


def test_decoders_that_cannot_run_fail_the_task_instead_of_the_image(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pool = FakePool(busy=100, trouble="image decoder processes cannot be started (3 failures in a row)")
    with pytest.raises(DecodersFailed, match="cannot be started"):
        asyncio.run(_prepare(pool, monkeypatch, tmp_path)())
    assert pool.calls == 1


def test_the_limits_and_budgets_are_the_services(onnx_classifier: Classifier) -> None:
    settings = Settings(max_image_bytes=1_000_000, decode_timeout_s=2.0, decode_memory_bytes=512 << 20)
    theirs = service_decoder_settings(onnx_classifier, settings)
    ours = decoder_settings(onnx_classifier, settings)
    # only scheduling differs: a task has one owner, so an expensive image is not demoted, and may wait longer
    assert dataclasses.replace(ours, demote_after_s=theirs.demote_after_s, wall_factor=theirs.wall_factor) == theirs
    assert ours.demote_after_s == settings.decode_timeout_s
    assert ours.wall_factor > theirs.wall_factor
