"""The frontend image, built from frontend.dockerfile; and both images working together as deployed."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator

import httpx
import pytest

from tests.containers import cloudbuild
from tests.containers.podman import (
    HARDENED,
    Container,
    Image,
    container,
    files_with_private_keys,
    mounted,
    record,
    secret_like_files,
)
from tests.helpers import CAT_CLASSES, free_port
from tests.helpers.fakes import CloudRunState, fake_cloud_run_api, running

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(3600)]

# google-auth must never reach for a metadata server from these tests: point it at a closed local port.
NO_METADATA_SERVER = {
    "GCE_METADATA_HOST": f"127.0.0.1:{free_port()}",
    "GCE_METADATA_IP": f"127.0.0.1:{free_port()}",
    "NO_GCE_CHECK": "true",
}


@pytest.fixture(scope="module")
def frontend(podman: str, frontend_image: Image) -> Iterator[Container]:
    """The frontend image running with nothing to talk to (the page itself does not need the backend)."""
    env = {"BACKEND_URL": f"http://127.0.0.1:{free_port()}", **NO_METADATA_SERVER}
    with container(podman, frontend_image.tag, env=env, options=HARDENED) as running_frontend:
        running_frontend.wait_until_answers("/_stcore/health")
        yield running_frontend


def test_frontend_image_serves_its_health_check_and_page(frontend: Container) -> None:
    assert frontend.wait_until_answers("/_stcore/health").text == "ok"
    page = httpx.get(f"{frontend.url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<div id="root">' in page.text


def test_frontend_runs_as_an_unprivileged_user(frontend: Container, frontend_image: Image) -> None:
    frontend.assert_unprivileged()
    # `python -m frontend` replaced itself with Streamlit: PID 1 is the server, and it gets SIGTERM
    cmdline = frontend.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[1:4] == ["-m", "streamlit", "run"], cmdline
    assert frontend_image.config["Cmd"] == ["python", "-m", "frontend"]
    assert frontend_image.user == "10001:10001"
    env = frontend_image.env
    assert (env["HOST"], env["PORT"], env["PYTHONUNBUFFERED"], env["PYTHONDONTWRITEBYTECODE"]) == (
        "0.0.0.0",
        "8080",
        "1",
        "1",
    )


def test_frontend_image_holds_no_torch_no_backend_and_no_secrets(podman: str, frontend_image: Image) -> None:
    with mounted(podman, frontend_image.tag) as root:
        assert sorted(p.name for p in (root / "app").iterdir()) == ["common", "frontend"]
        site = root / "opt/venv/lib/python3.11/site-packages"
        assert (site / "streamlit").is_dir()
        for heavy in ("torch", "torchvision", "onnxruntime", "onnx"):
            assert not (site / heavy).exists(), f"{heavy} has no place in the frontend image"
        assert not (site / "pip").exists()
        assert secret_like_files(root) == []
        assert files_with_private_keys(root, "app", "home", "root", "etc") == []
    record("frontend", {"size_mb": round(frontend_image.size_bytes / 1e6)})


def test_frontend_logs_its_start_as_json(frontend: Container) -> None:
    stdout, _ = frontend.logs()
    first = json.loads(stdout.splitlines()[0])
    assert first["severity"] == "INFO"
    assert first["message"] == "starting the frontend"
    assert first["url"] == f"http://0.0.0.0:{frontend.port}"
    # no welcome banner, so no lookup of an "External URL" on the internet at start
    assert "You can now view" not in stdout
    assert "External URL" not in stdout


def test_sigterm_stops_the_frontend_gracefully(podman: str, frontend_image: Image) -> None:
    env = {"BACKEND_URL": f"http://127.0.0.1:{free_port()}", **NO_METADATA_SERVER}
    with container(podman, frontend_image.tag, env=env) as server:
        server.wait_until_answers("/_stcore/health")
        changes = server.run("diff", "--format=json", server.name).stdout
        written = [path for paths in json.loads(changes or "{}").values() for path in paths]
        assert set(written) <= {"/etc"}, written
        seconds, exit_code, warnings = server.stop(timeout=30)
    record("frontend", {"sigterm_stop_seconds": round(seconds, 2)})
    assert exit_code == 0, (exit_code, warnings)
    assert "SIGKILL" not in warnings


CLASSIFY_THROUGH_THE_FRONTEND = textwrap.dedent(
    """
    import json
    from frontend.backend_client import Backend, ImageInput
    from frontend.config import FrontendSettings
    from frontend.samples import SAMPLES_BY_KEY

    backend = Backend(FrontendSettings.from_env())
    status = backend.status()
    cat = SAMPLES_BY_KEY["cat"]
    result = backend.predict(ImageInput(cat.filename, cat.read(), "image/jpeg"), top_k=3)
    print(json.dumps({
        "ready": status.ready,
        "source": status.location.source if status.location else None,
        "url": status.location.url if status.location else None,
        "labels": [p.label for p in result.predictions],
    }))
    """
)


def test_frontend_finds_the_backend_as_deployed_and_classifies_through_it(
    podman: str, backend: Container, frontend_image: Image
) -> None:
    """The frontend image, configured with cloudbuild.yaml's environment, looks the backend service up in
    (a stand-in for) the Cloud Run Admin API and classifies a photo with the backend image."""
    config = cloudbuild.load()
    values = cloudbuild.substitution_values(config)
    deploy = cloudbuild.steps(config)["deploy-frontend"]
    deployed_env = cloudbuild.key_values(cloudbuild.flag_value(cloudbuild.step_args(deploy, values), "--set-env-vars"))
    assert "BACKEND_URL" not in deployed_env
    api = CloudRunState(services={deployed_env["BACKEND_SERVICE"]: backend.url})
    with running(fake_cloud_run_api(api)) as fake_api:
        env = {
            **deployed_env,
            **NO_METADATA_SERVER,
            "CLOUD_RUN_API_ENDPOINT": fake_api.url,
            # on Cloud Run "auto" mints an identity token from the metadata server; here there is none
            "BACKEND_AUTH": "none",
        }
        with container(podman, frontend_image.tag, env=env, options=HARDENED) as frontend:
            frontend.wait_until_answers("/_stcore/health")
            answer = json.loads(frontend.python(CLASSIFY_THROUGH_THE_FRONTEND, timeout=120))
        project, region, service = (
            deployed_env["GOOGLE_CLOUD_PROJECT"],
            deployed_env["GOOGLE_CLOUD_REGION"],
            deployed_env["BACKEND_SERVICE"],
        )
        looked_up = f"/v2/projects/{project}/locations/{region}/services/{service}"
        assert any(path.startswith(looked_up) for path in fake_api.paths("GET")), fake_api.paths()
    assert answer["ready"] is True, answer
    assert (answer["source"], answer["url"]) == ("cloud_run", backend.url)
    assert answer["labels"][0] in CAT_CLASSES, answer
