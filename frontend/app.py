"""The Streamlit page: upload images (or take a photo, or pick a sample) and see what the backend finds.

Kept thin on purpose: locating and calling the backend is ``frontend.backend_client`` and
``frontend.discovery``; sentences and charts are ``frontend.presentation``. Run it with ``python -m frontend``.
"""

from __future__ import annotations

import hashlib
import secrets

import streamlit as st

from frontend.backend_client import Backend, BackendError, BackendStatus, Classification, Explanation, ImageInput
from frontend.config import ConfigError, FrontendSettings
from frontend.logs import configure_logging
from frontend.overlay import OverlayError, colour_bar, overlay
from frontend.plotter_client import ChartKind, Plotter, PlotterError, chart_size, plotter_configured
from frontend.presentation import (
    config_error_text,
    error_text,
    escape_markdown,
    explanation_error_text,
    image_error_text,
    influence_legend,
    input_caption,
    location_caption,
    location_text,
    model_text,
    no_preview_text,
    not_classified_text,
    predictions_chart,
    status_line,
    timing_caption,
    too_many_images_text,
    top1_sentence,
)
from frontend.previews import Previewer
from frontend.samples import SAMPLES, SAMPLES_BY_KEY

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]
MAX_TOP_K = 10
RESULT_CACHE_SIZE = 100
EXPLANATION_CACHE_SIZE = 50  # heat maps over previews: about 50 kB each

Outcome = Classification | BackendError


@st.cache_resource(show_spinner=False)
def get_backend(settings: FrontendSettings) -> Backend:
    """One Backend per configuration, shared by every session: the Cloud Run lookup is done once, and
    again only when the address it found stops answering (see ``frontend.discovery.LocationCache``)."""
    return Backend(settings)


@st.cache_resource(show_spinner=False, on_release=lambda plotter: plotter.close())
def get_plotter(settings: FrontendSettings) -> Plotter:
    """The optional plotting service (PLOTTER_URL or PLOTTER_SERVICE), found and called as the backend is."""
    return Plotter(settings)


@st.cache_resource(show_spinner=False, on_release=lambda previewer: previewer.close())
def get_previewer() -> Previewer:
    """The worker processes that make upload previews (the page itself never decodes an upload)."""
    previewer = Previewer()
    previewer.warm_up()
    return previewer


def sidebar(status: BackendStatus, settings: FrontendSettings) -> int:
    with st.sidebar:
        st.header("Backend")
        if status.location is not None:
            st.markdown(location_text(status.location))
            st.caption(location_caption(status.location))
        # A headline only: what is wrong, and what to do, is said once, on the page (see show_problem).
        if status.ready:
            st.success(status_line(status), icon=":material/check_circle:")
        elif status.starting:  # a cold start is no error: neutral, and checked again at the next run
            st.info(status_line(status), icon=":material/hourglass_top:")
        else:
            st.error(status_line(status), icon=":material/error:")
        if status.model is not None:
            st.markdown(model_text(status.model))
            st.caption(input_caption(status.model))
        st.button("Check again", key="check_backend")
        st.divider()
        top_k: int = st.slider("Classes per image (top-k)", 1, MAX_TOP_K, min(settings.default_top_k, MAX_TOP_K))
    return top_k


def show_problem(status: BackendStatus) -> None:
    """What stops the backend from classifying, said once, with a Retry button (a page run checks again)."""
    problem = status.problem
    if problem is None:
        return
    if problem.kind == "starting":
        st.info(error_text(problem), icon=":material/hourglass_top:")
    elif problem.kind == "not_configured":
        st.error(error_text(problem), icon=":material/settings:")
    else:
        st.error(error_text(problem), icon=":material/cloud_off:")
    st.button("Retry", key="retry", type="primary")


def session_key(name: str) -> str:
    """A widget key of this server session, for widgets whose files the server holds (uploads, the camera).

    Cloud Run's session affinity is best effort: when a page's websocket lands on another instance (this one
    scaled in, was replaced, or was busy), Streamlit starts a new session there, and the browser sends back the
    widgets' state, including the files it listed, whose bytes only the old instance had. With the same key the
    page would list them and classify nothing; with a key of the new session the uploader starts empty and the
    page asks for images as on a first visit (the sample photos picked stay picked: they are no uploads).
    Seen in a browser by tests/frontend/test_browser.py."""
    generation = st.session_state.setdefault("session_generation", secrets.token_hex(4))
    return f"{name}-{generation}"


def collect_images(settings: FrontendSettings) -> list[ImageInput]:
    uploads = st.file_uploader(
        "Upload images",
        type=IMAGE_TYPES,
        accept_multiple_files=True,
        max_upload_size=settings.max_upload_mb,
        key=session_key("uploads"),
        help="JPEG, PNG, WebP, GIF, BMP or TIFF; several at once are classified side by side.",
    )
    samples_column, camera_column = st.columns([3, 1], vertical_alignment="bottom")
    with samples_column:
        picked = st.pills(
            "Or try a sample photo",
            options=[sample.key for sample in SAMPLES],
            format_func=lambda key: SAMPLES_BY_KEY[key].title,
            selection_mode="multi",
            key="samples",
        )
    with camera_column:
        # Behind a toggle, so the browser asks for the camera only when someone wants it.
        use_camera = st.toggle("Use the camera", key="use_camera")
    photo = st.camera_input("Take a photo", key=session_key("camera")) if use_camera else None

    images = [ImageInput(f.name, f.getvalue(), f.type or "application/octet-stream") for f in uploads]
    if photo is not None:
        images.append(ImageInput("camera.jpg", photo.getvalue(), photo.type or "image/jpeg"))
    for key in picked:
        sample = SAMPLES_BY_KEY[key]
        images.append(ImageInput(sample.filename, sample.read(), "image/jpeg"))
    return images


def classify(backend: Backend, images: list[ImageInput], top_k: int, url: str) -> list[Outcome]:
    """Results for every image: remembered per session (so reruns do not resend), errors always retried."""
    cache: dict[tuple[str, int, str], Classification] = st.session_state.setdefault("results", {})
    keys = [(hashlib.sha256(image.data).hexdigest(), top_k, url) for image in images]
    todo = [i for i, key in enumerate(keys) if key not in cache]
    outcomes: dict[int, Outcome] = {i: cache[key] for i, key in enumerate(keys) if key in cache}
    if todo:
        noun = "image" if len(todo) == 1 else "images"
        with st.spinner(f"Classifying {len(todo)} {noun}…"):
            fresh = backend.predict_many([images[i] for i in todo], top_k)
        for i, outcome in zip(todo, fresh, strict=True):
            outcomes[i] = outcome
            if isinstance(outcome, Classification):
                cache[keys[i]] = outcome
        while len(cache) > RESULT_CACHE_SIZE:
            del cache[next(iter(cache))]
    return [outcomes[i] for i in range(len(images))]


def show_photo(backend: Backend, image: ImageInput, preview: bytes, url: str, position: int) -> None:
    """The photo, and a toggle that lays the heat map of where the model looked over it (``POST /explain``,
    asked once per image and backend in a session, as ``classify`` remembers results; failures are retried)."""
    digest = hashlib.sha256(image.data).hexdigest()
    wanted = st.toggle(
        "Show where the model looked",
        key=f"explain-{position}-{digest[:16]}",
        help="Greys out each part of the photo in turn and asks the model again: the parts whose loss costs the "
        "top class most are coloured hottest. Takes the backend about 50 classifications.",
    )
    caption = escape_markdown(image.filename)
    if not wanted:
        st.image(preview, caption=caption, width="stretch")
        return
    cache: dict[tuple[str, str], tuple[Explanation, bytes, bytes]] = st.session_state.setdefault("explanations", {})
    key = (digest, url)
    if key not in cache:
        try:
            with st.spinner("Finding where the model looked…"):
                explanation = backend.explain(image)
            cache[key] = (explanation, overlay(preview, explanation.heatmap_png), colour_bar(explanation.colormap))
        except (BackendError, OverlayError) as exc:
            st.image(preview, caption=caption, width="stretch")
            error = (
                exc if isinstance(exc, BackendError) else BackendError("server_error", "Its heat map is unreadable.")
            )
            st.warning(explanation_error_text(error), icon=":material/visibility_off:")
            return
        while len(cache) > EXPLANATION_CACHE_SIZE:
            del cache[next(iter(cache))]
    explanation, picture, legend = cache[key]
    st.image(picture, caption=caption, width="stretch")
    st.image(legend, width="stretch")
    st.caption(influence_legend(explanation.label))


def show_results(
    images: list[ImageInput],
    outcomes: list[Outcome],
    previews: list[bytes | None],
    status: BackendStatus,
    *,
    backend: Backend | None = None,
    url: str = "",
) -> None:
    # A problem with the backend itself is shown once, not once per image, nor again when the status above
    # already says it (the same kind of problem: the requests failed for the reason the status gave).
    said = status.problem.kind if status.problem is not None else None
    backend_errors = {
        (e.kind, e.title, e.detail): e
        for e in outcomes
        if isinstance(e, BackendError) and not e.affects_one_image and e.kind != said
    }
    for error in backend_errors.values():
        if error.kind == "starting":
            st.info(error_text(error), icon=":material/hourglass_top:")
        else:
            st.error(error_text(error), icon=":material/cloud_off:")
    if backend_errors and said is None:  # otherwise the status's Retry button is on the page already
        st.button("Retry", key="retry", type="primary")
    for position, (image, outcome, shown) in enumerate(zip(images, outcomes, previews, strict=True)):
        with st.container(border=True):
            left, right = st.columns([1, 2])
            with left:
                if shown is None:
                    st.info(no_preview_text(image.filename))
                elif backend is not None and isinstance(outcome, Classification):
                    show_photo(backend, image, shown, url, position)
                else:
                    st.image(shown, caption=escape_markdown(image.filename), width="stretch")
            with right:
                if isinstance(outcome, Classification):
                    st.subheader(top1_sentence(outcome))
                    st.altair_chart(predictions_chart(outcome.predictions), width="stretch")
                    st.caption(timing_caption(outcome))
                elif outcome.affects_one_image:
                    st.error(image_error_text(image.filename, outcome), icon=":material/broken_image:")
                else:
                    st.warning(not_classified_text(image.filename))


def show_plotter_chart(settings: FrontendSettings, outcomes: list[Outcome]) -> None:
    """The plotter's ggplot2 chart of the results, when a plotter is configured (otherwise nothing). A page run
    waits PLOTTER_TIMEOUT_S for it at most; when it does not come, one caption says so."""
    results = [outcome for outcome in outcomes if isinstance(outcome, Classification)]
    if not results or not plotter_configured(settings):
        return
    with st.expander("Chart (R/ggplot2)", icon=":material/bar_chart:"):
        kind: ChartKind = "bars"
        if len(results) > 1:
            picked = st.segmented_control(
                "Chart", ["compare", "bars"], default="compare", key="plotter_chart", label_visibility="collapsed"
            )
            kind = "bars" if picked == "bars" else "compare"
        width, height = chart_size(kind, len(results))
        try:
            chart = get_plotter(settings).chart(results, kind, width, height)
        except PlotterError as exc:
            st.caption(f"No chart this time: {exc.message}")
            return
        st.image(chart.png, width="stretch", output_format="PNG")


def main() -> None:
    st.set_page_config(page_title="Image classifier", page_icon=":material/image_search:", layout="wide")
    try:
        settings = FrontendSettings.from_env()
    except ConfigError as exc:
        st.error(config_error_text(exc), icon=":material/settings:")
        st.stop()
    configure_logging(settings.log_level)
    backend = get_backend(settings)
    with backend.page_run():  # one trace per page run when tracing is on (frontend.tracing)
        classify_page(settings, backend)


def classify_page(settings: FrontendSettings, backend: Backend) -> None:
    status = backend.status()
    top_k = sidebar(status, settings)

    st.title("Image classifier")
    st.caption("Upload photos and see which of the ImageNet classes the backend's model finds in each.")
    show_problem(status)
    images = collect_images(settings)
    if not images:
        st.info("Upload images, take a photo, or pick a sample photo to classify it.")
        return
    if len(images) > settings.max_files:
        st.warning(too_many_images_text(len(images), settings.max_files), icon=":material/filter_list:")
        images = images[: settings.max_files]
    # Previews are made in worker processes while the backend classifies.
    previews = get_previewer().submit([image.data for image in images])
    url = status.location.url if status.location else ""
    outcomes = classify(backend, images, top_k, url)
    show_results(images, outcomes, [preview.result() for preview in previews], status, backend=backend, url=url)
    show_plotter_chart(settings, outcomes)


# Two pages: this one (the default, at /) and the Monitoring page (the prediction log's drift). The Monitoring page
# is frontend/monitoring_page.py, not in a pages/ folder: Streamlit would take that for its older multipage layout.
st.navigation(
    [
        st.Page(main, title="Classify", icon=":material/image_search:", default=True),
        st.Page("monitoring_page.py", title="Monitoring", icon=":material/monitoring:", url_path="monitoring"),
    ]
).run()
