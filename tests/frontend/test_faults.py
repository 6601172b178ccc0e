"""Faults the frontend must live through without a restart: a backend that dies and comes back."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from frontend.backend_client import Backend, BackendError, ImageInput
from frontend.config import FrontendSettings
from tests.frontend.hostile_text import WORD_JOINER
from tests.helpers import CAT_CLASSES, COFFEE_CLASSES, ROOT, free_port, server_popen
from tests.helpers.fakes import BackendBehaviour, FakeServer

APP = str(ROOT / "frontend" / "app.py")


def texts(elements: object) -> list[str]:
    """What the elements say, with markdown's backslash escapes and escape_markdown's invisible word
    joiners removed (as a browser shows them)."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)).replace(WORD_JOINER, "") for e in elements]  # type: ignore[attr-defined]


def most_likely(at: AppTest) -> list[str]:
    return [s for s in texts(at.subheader) if s.startswith("Most likely:")]


def run(at: AppTest) -> None:
    at.run()
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.slow
def test_backend_killed_and_restarted_mid_session(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("BACKEND_URL", url)
    st.cache_resource.clear()
    st.cache_data.clear()
    page = AppTest.from_file(APP, default_timeout=90)
    env = {"MODEL_CACHE_DIR": str(model_cache), "ACCESS_LOG": "false"}

    # on a fixed port, so that it can be restarted where the frontend expects it
    with server_popen("backend", "/ready", env, tmp_path / "first.log", port=port) as (_, first):
        run(page)
        page.pills(key="samples").set_value(["cat"])
        run(page)
        (cat,) = most_likely(page)
        assert any(name in cat for name in CAT_CLASSES)
        first.send_signal(signal.SIGKILL)  # a crash: no graceful shutdown
        first.wait(timeout=30)

    # While it is down: a clear message, the cat's result still on the page, no traceback.
    page.pills(key="samples").set_value(["cat", "coffee"])
    run(page)
    assert texts(page.sidebar.error) == ["Not answering"]
    (error,) = texts(page.main.error)  # once: the images failed for the reason the status gives
    assert error.startswith(f"**The backend at {url} is not answering.**")
    assert texts(page.main.warning) == ["coffee.jpg was not classified: see the message above."]
    assert most_likely(page) == [cat]

    with server_popen("backend", "/ready", env, tmp_path / "second.log", port=port):  # back, on the same port
        page.button(key="retry").click()
        run(page)
        assert texts(page.sidebar.success) == ["Ready"]
        assert not page.main.error
        lines = most_likely(page)
        assert len(lines) == 2
        assert any(name in lines[1] for name in COFFEE_CLASSES)
    st.cache_resource.clear()
    st.cache_data.clear()


def test_a_backend_dying_during_a_request(backend: FakeServer, behaviour: BackendBehaviour) -> None:
    behaviour.predict_delay_s = 10.0  # still "working" when it dies
    client = Backend(FrontendSettings(backend_url=backend.url))
    killer = threading.Timer(0.5, backend.stop)
    killer.start()
    try:
        with pytest.raises(BackendError) as caught:
            client.predict(ImageInput("cat.jpg", b"\xff\xd8\xff", "image/jpeg"), top_k=3)
    finally:
        killer.join()

    assert caught.value.kind == "unreachable"
    assert caught.value.title == f"The backend at {backend.url} is not answering."
