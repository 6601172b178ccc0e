"""README's "Ship a new model version": its gcloud commands parsed by the installed gcloud offline (no account, no
network), and what they do checked: the bucket mounted read-only where MODEL_DIR points, a revision with no traffic
under a tag, a split to that tag, promotion and roll-back (the helpers of tests/containers and tests/batch)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.containers import cloudbuild
from tests.containers.cloudrun_limits import Command, check_command, expand, flag_values, last_value
from tests.helpers import ROOT, need_executable

README = ROOT / "README.md"
SECTION = "## Ship a new model version"


def section_commands() -> tuple[str, list[str]]:
    """The README's variable assignments (all of them: the section uses step 1's) and the section's gcloud lines."""
    return cloudbuild.section_commands(cloudbuild.doc_section(README, SECTION))


@pytest.fixture(scope="module")
def documented() -> list[Command]:
    preamble, lines = section_commands()
    return expand(lines, cloudbuild.sample_preamble(preamble))


def _kv(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in text.split(","))


def test_a_revision_serves_the_bundle_from_the_bucket_with_no_traffic_under_a_tag(documented: list[Command]) -> None:
    updates = [c.args for c in documented if c.args[:3] == ["run", "services", "update"]]
    (first,) = [args for args in updates if flag_values(args, "--add-volume")]
    assert first[3] == "classifier-backend"
    (volume,) = [_kv(v) for v in flag_values(first, "--add-volume")]
    assert volume == {"name": "models", "type": "cloud-storage", "bucket": "my-project-models", "readonly": "true"}
    (mount,) = [_kv(m) for m in flag_values(first, "--add-volume-mount")]
    assert mount["volume"] == volume["name"]
    env = cloudbuild.key_values(last_value(first, "--update-env-vars") or "")
    assert env == {"MODEL_DIR": "/models/leaves/v3"}  # --update-env-vars: INFERENCE_THREADS stays
    assert env["MODEL_DIR"].startswith(mount["mount-path"] + "/")
    assert "--set-env-vars" not in " ".join(first)
    assert "--no-traffic" in first
    assert last_value(first, "--tag") == "v3"
    # the bundle copied is the one MODEL_DIR names
    (copy,) = [c.args for c in documented if c.args[:2] == ["storage", "cp"]]
    assert copy[2:] == ["-r", "bundles/leaves/v3", "gs://my-project-models/leaves/"]
    grants = {
        (c.args[3], last_value(c.args, "--member"), last_value(c.args, "--role"))
        for c in documented
        if c.args[:3] == ["storage", "buckets", "add-iam-policy-binding"]
    }
    assert grants == {
        (
            "gs://my-project-models",
            "serviceAccount:classifier-backend@my-project.iam.gserviceaccount.com",
            "roles/storage.objectViewer",
        )
    }


def test_traffic_goes_to_the_tag_then_all_of_it_forward_or_back(documented: list[Command]) -> None:
    traffic = [c.args[4:] for c in documented if c.args[:3] == ["run", "services", "update-traffic"]]
    routes = [next(a for a in args if a.startswith(("--to-", "--remove-tags"))) for args in traffic]
    assert routes == [
        "--to-tags=v3=10",
        "--to-latest",
        "--to-revisions=classifier-backend-00007-abc=100",
        "--remove-tags=v3",
    ]
    proxies = [c.args for c in documented if c.args[:3] == ["run", "services", "proxy"]]
    assert [last_value(args, "--tag") for args in proxies] == ["v3"]


def test_every_command_is_within_cloud_runs_limits(documented: list[Command]) -> None:
    assert len(documented) >= 10, "the section lost its gcloud commands"
    problems = {c.line: check_command(c.args) for c in documented}
    assert not any(problems.values()), {line: found for line, found in problems.items() if found}


@pytest.mark.slow
def test_gcloud_accepts_every_command_of_the_section(tmp_path: Path) -> None:
    gcloud = cloudbuild.offline_gcloud(need_executable("gcloud"), tmp_path)
    preamble, commands = section_commands()
    preamble = cloudbuild.sample_preamble(preamble)
    setup = cloudbuild.run_gcloud(gcloud, "gcloud config set project my-project", preamble)
    assert setup[0] == 0, setup[1]
    with ThreadPoolExecutor(4) as pool:
        results = dict(
            zip(commands, pool.map(lambda c: cloudbuild.run_gcloud(gcloud, c, preamble), commands), strict=True)
        )
    refused = cloudbuild.rejected(results)
    assert not refused, "\n\n".join(f"{cmd}\n-> {out.strip()}" for cmd, out in refused.items())
    # ...and the same check refuses a misspelt flag of these commands
    for bad in (
        "gcloud run services update s --region=europe-west1 --no-trafic",
        "gcloud run services update-traffic s --region=europe-west1 --to-tag=v3=10",
    ):
        code, out = cloudbuild.run_gcloud(gcloud, bad, preamble)
        assert code != 0
        assert cloudbuild.NO_ACCOUNT not in out, out
