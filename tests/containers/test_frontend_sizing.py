"""The frontend's Cloud Run size (``--memory`` for ``--concurrency`` sessions) against the measured memory
of a Streamlit session (tests/containers/frontend_memory.py; figures and method in docs/deploy.md).

Streamlit holds one request per open page, its websocket, for as long as the page is open: Cloud Run's
``--concurrency`` is the number of sessions an instance carries. Each session keeps its uploads in the
server's memory. The deploy must fit, with headroom: the server and its first page run, the preview
worker at its address-space cap (a hostile upload may take it there), and every session at the measured
cost of 16 phone photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from frontend.previews import WORKER_MEMORY_BYTES
from tests.containers import cloudbuild
from tests.containers.cloudrun_limits import expand, last_value, memory_bytes

MiB = 1024 * 1024
# Measured (docs/deploy.md, "Sizing the frontend"; four runs of 4 to 10 sessions): the PSS of the frontend's
# process tree with K sessions open, each having uploaded 16 JPEGs of 3.5 MB (12 MP) and shown their
# results, stayed under FIXED_MB + K x SESSION_MB. One session measured 268 to 302 MB in all; one more
# session added 32 to 122 MB (its uploads, 56 MB, plus copies the allocator keeps; at times it gave back).
FIXED_MB = 250  # the server, its first page run's imports, the preview worker at rest
SESSION_MB = 110  # one open session with 16 phone photos
IMAGES_PER_SESSION = 16
HEADROOM = 0.9  # use at most 90% of --memory: Cloud Run also counts the in-memory filesystem


def needed_mib(concurrency: int) -> float:
    return FIXED_MB + WORKER_MEMORY_BYTES / MiB + concurrency * SESSION_MB


def frontend_deploys() -> dict[str, list[str]]:
    """Every `gcloud run deploy` of the frontend: the build's and the docs' (arguments after gcloud)."""
    config = cloudbuild.load()
    values = cloudbuild.substitution_values(config)
    found = {"cloudbuild.yaml": cloudbuild.step_args(cloudbuild.steps(config)["deploy-frontend"], values)}
    preamble, lines = cloudbuild.documented_commands()
    for command in expand(lines, cloudbuild.sample_preamble(preamble)):
        if command.args[:3] == ["run", "deploy", values["_FRONTEND_SERVICE"]]:
            found[command.line[:60]] = command.args
    return found


def test_the_frontend_is_sized_for_its_concurrency_from_the_measurement() -> None:
    deploys = frontend_deploys()
    assert len(deploys) >= 2, "the README's hand deploy of the frontend went missing"
    for where, args in deploys.items():
        concurrency_text, memory_text, cpu_text = (last_value(args, f) for f in ("--concurrency", "--memory", "--cpu"))
        assert concurrency_text, f"{where}: set --concurrency"
        assert memory_text, f"{where}: set --memory"
        assert cpu_text, f"{where}: set --cpu"
        concurrency, memory = int(concurrency_text), memory_bytes(memory_text)
        assert memory is not None, memory_text
        need_mib = needed_mib(concurrency)
        assert need_mib <= HEADROOM * memory / MiB, (
            f"{where}: {concurrency} sessions need {need_mib:.0f} MiB (measured), more than "
            f"{HEADROOM:.0%} of --memory={memory_text}"
        )
        # ...and not wildly oversized either
        assert need_mib >= 0.75 * HEADROOM * memory / MiB, f"{where}: --concurrency could be higher"
        # one Streamlit process runs every session's script under one GIL: more vCPUs would idle
        assert cpu_text == "1", where


def test_the_sizing_model_covers_cloud_runs_default_concurrency_badly() -> None:
    """Why it is explicit: Cloud Run's default (80 per instance, or 80 x vCPUs from gcloud) would need
    gigabytes no frontend instance here has."""
    assert needed_mib(80) > 8 * 1024


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(900)
def test_measured_session_memory_is_within_the_figures_the_sizing_uses(tmp_path: Path) -> None:
    """Re-measure: the real ``python -m frontend``, 4 Chromium sessions uploading 16 photos of ~3.5 MB."""
    from tests.containers.frontend_memory import REPORT, measure

    sessions = 4  # measure() launches Chromium through tests.helpers.chromium (skipped, or failed in CI, without it)
    measurement = measure(sessions, IMAGES_PER_SESSION, tmp_path)
    report = measurement.report()
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    assert measurement.image_mb >= 3.0, report  # phone-sized photos, as the sizing assumes
    for k, pss in enumerate(measurement.after_each_session_mb, start=1):
        assert pss <= FIXED_MB + k * SESSION_MB, (k, report)
    assert measurement.peak_mb <= FIXED_MB + sessions * SESSION_MB, report
