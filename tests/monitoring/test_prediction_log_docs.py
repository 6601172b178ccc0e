"""docs/monitoring.md's Prediction log section: its column table is common.prediction_log's, its settings are
backend/config.py's with their defaults, the backend mounts the bucket writable where PREDICTION_LOG_DIR points,
and (slow) the installed gcloud accepts its commands offline (as tests/monitoring/test_drift_docs.py does)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from backend.config import Settings
from common.prediction_log import COLUMNS
from tests.containers import cloudbuild
from tests.helpers import ROOT, need_executable

DOCS = ROOT / "docs" / "monitoring.md"
SECTION = "## Prediction log"


def section() -> str:
    return cloudbuild.doc_section(DOCS, SECTION)


def section_commands() -> tuple[str, list[str]]:
    """The README's variable assignments, the section's own, and the section's gcloud lines."""
    return cloudbuild.section_commands(section())


def table_rows(heading: str) -> list[list[str]]:
    text = section()
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # past the header and its rule


def test_the_column_table_lists_the_schema_in_order() -> None:
    names = [name for row in table_rows("### The record") for name in re.findall(r"`(\w+)`", row[0])]
    assert names == list(COLUMNS)


def test_the_settings_table_gives_the_settings_and_their_defaults() -> None:
    rows = {row[0].strip("`"): row[1].strip("`") for row in table_rows("### Settings (the backend's)")}
    fields = Settings.model_fields
    assert set(rows) == {name.upper() for name in fields if name.startswith("prediction_log")}
    assert fields["prediction_log_dir"].default is None
    for name in ("prediction_log_flush_s", "prediction_log_max_rows", "prediction_log_queue"):
        assert float(rows[name.upper()]) == fields[name].default, name


def test_the_backend_mounts_the_bucket_writable_where_prediction_log_dir_points() -> None:
    _, commands = section_commands()
    (update,) = [c for c in commands if c.startswith("gcloud run services update ")]
    given = [word for word in shlex.split(update) if word.startswith("--")]
    volume = next(f for f in given if f.startswith("--add-volume="))
    assert volume.startswith("--add-volume=name=log,type=cloud-storage,bucket=")
    assert "readonly" not in volume  # it writes
    assert "--add-volume-mount=volume=log,mount-path=/var/log/predictions" in given
    assert "--update-env-vars=PREDICTION_LOG_DIR=/var/log/predictions" in given
    (binding,) = [c for c in commands if "add-iam-policy-binding" in c]
    assert "--role=roles/storage.objectUser" in binding.split()  # create, read and delete: a rename is a move


@pytest.mark.slow
def test_gcloud_accepts_every_command_of_the_section(tmp_path: Path) -> None:
    gcloud = cloudbuild.offline_gcloud(need_executable("gcloud"), tmp_path)
    preamble, commands = section_commands()
    assert len(commands) >= 3, commands
    preamble = cloudbuild.sample_preamble(preamble)
    setup = cloudbuild.run_gcloud(gcloud, "gcloud config set project my-project", preamble)
    assert setup[0] == 0, setup[1]
    results = {command: cloudbuild.run_gcloud(gcloud, command, preamble) for command in commands}
    refused = cloudbuild.rejected(results)
    assert not refused, "\n\n".join(f"{cmd}\n-> {out.strip()}" for cmd, out in refused.items())
