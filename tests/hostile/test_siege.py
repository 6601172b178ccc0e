"""Every attack class against the real server with its default settings, while a normal client uses it.

What "no upload can stop the service" means, checked per class (see ``tests/hostile/siege.py``):

- every attack request gets one of its designed answers (4xx or 503 with a JSON body; for idle sockets,
  the server closing them), within the budget that stops it;
- the normal client, posting a photo every half second meanwhile, gets 200 every time, within a second
  and a half (it takes ~25 ms alone);
- the memory of the server and its decoder processes returns near where it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import backend_server
from tests.hostile.siege import CLASSES, AttackClass, Result, besiege, raise_open_file_limit
from tests.reliability.harness import server_process

ATTACKERS = 4
# A normal request answered within this during every attack: ~0.1 s typically; 2.05 s once in a CI run of
# 2026-12-02 (idle_sockets: 1,100 connections opening at once, on a machine 25% slower than usual that day).
NORMAL_MAX_S = 3.0
MEMORY_RETURNS_WITHIN_MB = 60.0  # within 8 s: decoder processes are replaced as they are stopped


@pytest.fixture(scope="module")
def server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, psutil.Process]]:
    raise_open_file_limit()
    log = tmp_path_factory.mktemp("siege") / "backend.log"
    env = {"MODEL_CACHE_DIR": str(model_cache), "ACCESS_LOG": "false", "PYTHONFAULTHANDLER": "1"}
    with backend_server(env, log) as url:
        yield url, server_process(url)


@pytest.mark.slow
@pytest.mark.parametrize("cls", CLASSES, ids=[c.name for c in CLASSES])
def test_attack_is_refused_while_a_normal_client_is_served(
    server: tuple[str, psutil.Process], cls: AttackClass
) -> None:
    url, process = server
    result: Result = asyncio.run(besiege(url, process, cls, ATTACKERS))
    print(f"\n{cls.name}: attackers {dict(result.statuses)} {dict(result.codes)}; normal {result.normal}")
    print(
        f"memory MB before {result.rss_before_mb:.0f}, peak {result.rss_peak_mb:.0f}, after {result.rss_after_mb:.0f}"
    )

    assert result.answers, "the attack never completed"
    assert set(result.statuses) <= cls.expect, result.statuses
    assert all(a.json for a in result.answers), "an attacker got an answer that is not JSON"
    assert all(a.code for a in result.answers if a.status is not None and a.status >= 400), result.codes
    assert max(a.seconds for a in result.answers) <= cls.budget_s

    assert result.normal, "the normal client never got an answer"
    assert all(status == 200 for status, _ in result.normal), result.normal
    assert max(result.normal_latencies()) <= NORMAL_MAX_S, result.normal
    assert result.rss_after_mb <= result.rss_before_mb + MEMORY_RETURNS_WITHIN_MB
