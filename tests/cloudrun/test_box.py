"""Cloud Run in a box, in Chromium: the frontend container's page finds the backend container through the
Admin API, calls it with identity tokens from the metadata server, and classifies a photo; then each way
the deployment can be wrong gets one clear message naming what to grant or set; then a cold start.

Screenshots: ``artifacts/cloudrun/<scenario>.png``; the messages and timings: ``artifacts/cloudrun/report.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from frontend.config import FrontendSettings
from tests.cloudrun.box import ARTIFACTS, CloudRunBox, build_images
from tests.containers.podman import Container, podman_executable
from tests.frontend.hostile_text import WORD_JOINER
from tests.helpers import CAT, CAT_CLASSES, chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.browser, pytest.mark.timeout(3600)]

REPORT = ARTIFACTS / "report.json"
TIMEOUT_MS = 90_000
SIDEBAR = "[data-testid=stSidebar]"
MAIN = "[data-testid=stMain]"


def record(section: str, values: dict[str, Any]) -> None:
    """Merge into artifacts/cloudrun/report.json (what the page said, and how long things took)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    report[section] = values
    REPORT.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def box(browser: Browser) -> Iterator[CloudRunBox]:
    """Built and started once for the module (Chromium first: without it nothing is built)."""
    podman = podman_executable()
    images = build_images(podman, ARTIFACTS)
    with CloudRunBox(podman, images) as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        yield page
    finally:
        context.close()


def shown(page: Page, selector: str) -> list[str]:
    """The texts of the elements, as read (escape_markdown's invisible word joiners removed)."""
    return [text.replace(WORD_JOINER, "").strip() for text in page.locator(selector).all_inner_texts()]


def alerts(page: Page, where: str, kind: str) -> list[str]:
    """Streamlit's st.error / st.info / st.success / st.warning boxes in the sidebar or the main area."""
    return shown(page, f"{where} [data-testid=stAlertContent{kind}] [data-testid=stMarkdownContainer]")


def open_page(page: Page, url: str) -> float:
    """Load the page; seconds until the sidebar shows the backend's status."""
    started = time.monotonic()
    page.goto(url, wait_until="domcontentloaded")
    page.locator(f"{SIDEBAR} [data-testid^=stAlertContent]").first.wait_for()
    return time.monotonic() - started


def upload_the_cat(page: Page) -> None:
    page.locator("input[type=file]").first.set_input_files(str(CAT))  # scikit-image's chelsea.png


def text_of(page: Page) -> str:
    return page.locator("[data-testid=stApp]").inner_text().replace(WORD_JOINER, "")


def container_env(running: Container) -> dict[str, str]:
    result = running.run("inspect", "--format={{json .Config.Env}}", running.name)
    assert result.returncode == 0, result.stderr
    return dict(item.split("=", 1) for item in json.loads(result.stdout))


def backend_answers(box: CloudRunBox) -> bool:
    try:
        return httpx.get(f"{box.backend_url}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def restore_backend(box: CloudRunBox) -> None:
    """Running and ready again, whatever a test left it as."""
    assert box.backend is not None
    if box.backend.state().get("Paused"):
        box.unpause_backend()
    if not backend_answers(box):
        box.start_backend()


def test_the_page_finds_the_backend_and_classifies_a_photo(box: CloudRunBox, page: Page) -> None:
    box.switch("working")
    assert box.frontend is not None
    env = container_env(box.frontend)
    assert "BACKEND_URL" not in env
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env  # no key file: its identity is the metadata server's
    assert env["K_SERVICE"] == box.deployment.frontend.service
    tokens_before = len(box.metadata_state.audiences)

    seconds = open_page(page, box.frontend_url)
    page.locator(SIDEBAR).get_by_text("Ready", exact=True).wait_for()
    sidebar = page.locator(SIDEBAR).inner_text().replace(WORD_JOINER, "")
    d = box.deployment
    assert box.backend_url in sidebar
    assert f"Found through Cloud Run service '{d.backend.service}' (project {d.project}, region {d.region})." in sidebar
    upload_the_cat(page)
    verdict = page.get_by_text("Most likely:").first
    verdict.wait_for()
    text = verdict.inner_text()
    assert any(f"Most likely: {name} (" in text for name in CAT_CLASSES), text
    page.locator(".vega-embed").first.wait_for()
    assert not alerts(page, MAIN, "Error")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "working.png"), full_page=True)

    # What it took: an identity token for the backend's URL, and a lookup with an access token.
    assert box.metadata_state.audiences[tokens_before:] == [box.backend_url]
    lookups = [r for r in box.api.requests if r.path.startswith(f"/v2/projects/{d.project}/")]
    assert lookups
    assert {r.headers.get("authorization", "").removeprefix("Bearer ") for r in lookups} <= (
        box.metadata_state.access_tokens
    )
    record("working", {"label": text, "seconds_to_status": round(seconds, 2)})


# scenario -> (the sidebar's headline, what the one message on the page must say)
REFUSALS: dict[str, tuple[str, list[str]]] = {
    "wrong-audience": (
        "Refusing the frontend's requests",
        [
            "refused the request (401).",
            "The token was issued for another audience",
            "The identity token the frontend sent is for https://another-service-",
            "although the frontend asked for one for {backend_url}",
            "Set BACKEND_AUDIENCE to the audience the backend checks",
        ],
    ),
    "other-account": (
        "Refusing the frontend's requests",
        [
            "refused the request (403).",
            "This identity may not call the service.",
            "The backend does not accept the frontend's service account "
            "(someone-else@example-project.iam.gserviceaccount.com).",
            "give the frontend's service account (someone-else@example-project.iam.gserviceaccount.com) "
            "roles/run.invoker on it",
        ],
    ),
    "no-metadata-server": (
        "No metadata server",
        [
            "The metadata server could not be reached.",
            "The frontend asked it at {metadata_url} and the connection was refused.",
            "If GCE_METADATA_HOST is set, it must name a metadata server",
            "check the instance's network",
            "If this is not Cloud Run, unset K_SERVICE and set BACKEND_URL",
        ],
    ),
    "no-viewer-role": (
        "Not configured",
        [
            "The backend could not be found.",
            "Permission 'run.services.get' denied",
            "Grant roles/run.viewer on the backend service to the frontend's service account "
            "(classifier-frontend@example-project.iam.gserviceaccount.com)",
            "--role=roles/run.viewer",
        ],
    ),
}


@pytest.mark.parametrize("scenario", list(REFUSALS))
def test_each_refusal_is_one_clear_message(box: CloudRunBox, page: Page, scenario: str) -> None:
    headline, says = REFUSALS[scenario]
    box.switch(scenario)
    try:
        seconds = open_page(page, box.frontend_url)
        assert alerts(page, SIDEBAR, "Error") == [headline]
        assert not alerts(page, SIDEBAR, "Success")  # never "Ready"
        (message,) = alerts(page, MAIN, "Error")
        for phrase in says:
            assert phrase.format(backend_url=box.backend_url, metadata_url=box.metadata.url) in message, message

        # A photo does not add the same message again: its card points at the one above.
        upload_the_cat(page)
        page.get_by_text("chelsea.png was not classified: see the message above.").wait_for()
        assert alerts(page, MAIN, "Error") == [message]
        assert text_of(page).count(says[0]) == 1
        assert not page.get_by_text("Most likely:").count()
        assert not page.get_by_text("Traceback").count()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{scenario}.png"), full_page=True)
        record(scenario, {"sidebar": headline, "message": message, "seconds_to_status": round(seconds, 2)})
        if scenario == "no-metadata-server":
            assert seconds < 10, "the page must say so promptly"
    finally:
        box.apply("working")


def test_the_backends_cold_start_fits_in_the_status_timeout(box: CloudRunBox) -> None:
    """``podman start`` to ``/ready`` 200, three times: the local floor of a cold start (Cloud Run adds
    scheduling and the image pull). STATUS_TIMEOUT_S's default is sized from it."""
    seconds = []
    try:
        for _ in range(3):
            box.stop_backend()
            seconds.append(round(box.start_backend(), 2))
    finally:
        restore_backend(box)
    record("cold_start", {"podman_start_to_ready_s": seconds, "status_timeout_s": FrontendSettings().status_timeout_s})
    assert max(seconds) < FrontendSettings().status_timeout_s


def test_a_cold_start_is_shown_as_starting_not_as_an_error(box: CloudRunBox, page: Page) -> None:
    box.switch("working")
    try:
        # Scaled to zero, and a fresh frontend that has not reached it yet: connections are refused.
        box.stop_backend()
        box.restart_frontend()
        open_page(page, box.frontend_url)
        assert alerts(page, SIDEBAR, "Info") == ["The backend is starting"]
        (starting,) = [text for text in alerts(page, MAIN, "Info") if text.startswith("The backend is starting")]
        assert starting.startswith(f"The backend is starting. Nothing accepts connections at {box.backend_url} yet.")
        assert not alerts(page, SIDEBAR, "Error")
        assert not alerts(page, MAIN, "Error")
        page.screenshot(path=str(ARTIFACTS / "cold-start-refused.png"), full_page=True)
        started = box.start_backend()
        page.get_by_role("button", name="Retry").click()
        page.locator(SIDEBAR).get_by_text("Ready", exact=True).wait_for()

        # On Cloud Run a request to a service scaled to zero is held until an instance has started: the
        # status check runs out of STATUS_TIMEOUT_S. A frozen container accepts connections and says nothing.
        box.pause_backend()
        page.reload(wait_until="domcontentloaded")
        began = time.monotonic()
        page.locator(f"{SIDEBAR} [data-testid=stAlertContentInfo]").wait_for()
        waited = time.monotonic() - began
        assert alerts(page, SIDEBAR, "Info") == ["The backend is starting"]
        timeout = FrontendSettings().status_timeout_s
        (held,) = [text for text in alerts(page, MAIN, "Info") if text.startswith("The backend is starting")]
        assert f"It did not answer within {timeout:g} s (STATUS_TIMEOUT_S)" in held
        assert "--min-instances=1" in held
        assert not alerts(page, MAIN, "Error")
        page.screenshot(path=str(ARTIFACTS / "cold-start-timeout.png"), full_page=True)

        box.unpause_backend()
        page.get_by_role("button", name="Retry").click()
        page.locator(SIDEBAR).get_by_text("Ready", exact=True).wait_for()
        upload_the_cat(page)
        page.get_by_text("Most likely:").first.wait_for()
        record(
            "cold_start_page",
            {
                "refused": starting,
                "held": held,
                "podman_start_to_ready_s": round(started, 2),
                "seconds_until_starting_shown": round(waited, 1),
            },
        )
    finally:
        restore_backend(box)
