"""docs/monitoring.md's Drift section: its gcloud commands parsed by the installed gcloud offline (the helpers of
tests/containers, as tests/backend/test_rollout_docs.py does for the README), and what they set checked: the log
bucket mounted read-only where PREDICTION_LOG_DIR points, and the job running ``python -m frontend.drift``."""

from __future__ import annotations

import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.containers import cloudbuild
from tests.helpers import ROOT, need_executable

DOCS = ROOT / "docs" / "monitoring.md"
SECTION = "## Drift"


def section_commands() -> tuple[str, list[str]]:
    """The README's variable assignments, the section's own, and the section's gcloud lines."""
    return cloudbuild.section_commands(cloudbuild.doc_section(DOCS, SECTION))


def flags(command: str) -> list[str]:
    return [word for word in shlex.split(command) if word.startswith("--")]


def test_the_frontend_mounts_the_log_read_only_where_prediction_log_dir_points() -> None:
    _, commands = section_commands()
    (update,) = [c for c in commands if c.startswith("gcloud run services update ")]
    given = flags(update)
    assert any(
        f.startswith("--add-volume=name=prediction-log,type=cloud-storage") and "readonly=true" in f for f in given
    )
    assert "--add-volume-mount=volume=prediction-log,mount-path=/mnt/prediction-log" in given
    assert "--update-env-vars=PREDICTION_LOG_DIR=/mnt/prediction-log" in given
    (job,) = [c for c in commands if c.startswith("gcloud run jobs deploy ")]
    assert "--max-retries=0" in flags(job)  # drift (exit 1) is an answer, not a failure to retry
    assert "--args=-m,frontend.drift,/mnt/prediction-log,--out,/mnt/reports/drift-report.html" in (flags(job))


@pytest.mark.slow
def test_gcloud_accepts_every_command_of_the_section(tmp_path: Path) -> None:
    gcloud = cloudbuild.offline_gcloud(need_executable("gcloud"), tmp_path)
    preamble, commands = section_commands()
    assert len(commands) >= 5, commands
    preamble = cloudbuild.sample_preamble(preamble)
    setup = cloudbuild.run_gcloud(gcloud, "gcloud config set project my-project", preamble)
    assert setup[0] == 0, setup[1]
    with ThreadPoolExecutor(4) as pool:
        results = dict(
            zip(commands, pool.map(lambda c: cloudbuild.run_gcloud(gcloud, c, preamble), commands), strict=True)
        )
    refused = cloudbuild.rejected(results)
    assert not refused, "\n\n".join(f"{cmd}\n-> {out.strip()}" for cmd, out in refused.items())
    code, out = cloudbuild.run_gcloud(gcloud, "gcloud run jobs deploy j --region=europe-west1 --max-retry=0", preamble)
    assert code != 0
    assert cloudbuild.NO_ACCOUNT not in out, out
