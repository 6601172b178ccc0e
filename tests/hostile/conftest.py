from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.corpus import Case, build_corpus
from tests.reliability.harness import Server, running_server


@pytest.fixture(scope="session")
def corpus() -> list[Case]:
    return build_corpus()


@pytest.fixture(scope="module")
def hostile_server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``python -m backend`` with the default limits, for this module alone (its memory is measured)."""
    log = tmp_path_factory.mktemp("hostile") / "backend.log"
    with running_server({"MODEL_CACHE_DIR": str(model_cache), "ACCESS_LOG": "false"}, log) as server:
        yield server
