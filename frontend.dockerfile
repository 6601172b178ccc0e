# The frontend image: the Streamlit page, which finds the backend through the Cloud Run API. No torch.
#
#   docker build -f frontend.dockerfile -t classifier-frontend .
#   docker run --rm -p 8501:8080 -e BACKEND_URL=http://host.docker.internal:8080 classifier-frontend
#
# Stages: `deps` builds the virtualenv from requirements_frontend.txt; the final stage copies it and the code.
# requirements_frontend.txt is exported from uv.lock (`make requirements`) and installed hash-checked;
# pip's download cache is a BuildKit cache mount, kept between builds and never in a layer.
# The base of every stage, pinned by digest: a rebuild gets the same Python and Debian until someone
# moves the pin (deploy/update-base-image.sh; docs/deploy.md). Override it to build from another
# image, e.g. --build-arg PYTHON_IMAGE=python:3.11-slim (the tests' local stand-in does this).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

# ---------------------------------------------------------------------------------------------------
# deps: the frontend's virtualenv, requirements_frontend.txt only
FROM ${PYTHON_IMAGE} AS deps
# Extra pip options, e.g. "--find-links /wheels" or "--extra-index-url URL".
ARG PIP_EXTRA_ARGS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements_frontend.txt ./
# pip and setuptools are removed from the venv afterwards: the service never installs anything.
# ${PIP_EXTRA_ARGS} is unquoted on purpose: it holds several options, split into words.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps ${PIP_EXTRA_ARGS} -r requirements_frontend.txt \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# ---------------------------------------------------------------------------------------------------
# the service
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="image-classifier-frontend" \
      org.opencontainers.image.description="Streamlit upload page for the image classifier backend"
# Cloud Run sets PORT; HOST must be 0.0.0.0 in a container. The backend is found from BACKEND_SERVICE,
# GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_REGION (set at deploy time), or given as BACKEND_URL.
# Streamlit's welcome banner would look the instance's external IP up on the internet at every start.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:${PATH} \
    HOST=0.0.0.0 \
    PORT=8080 \
    STREAMLIT_LOGGER_HIDE_WELCOME_MESSAGE=true
RUN groupadd --gid 10001 app \
    && useradd --no-log-init --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# common/: the settings types and log format both services share
COPY common/ common/
COPY frontend/ frontend/
# Byte-compile our code at build time: the app user cannot (and PYTHONDONTWRITEBYTECODE says not to).
RUN python -m compileall -q common frontend
USER 10001:10001
EXPOSE 8080
# `python -m frontend` checks the configuration, then execs Streamlit in its place (PID 1 gets SIGTERM).
CMD ["python", "-m", "frontend"]
