# The optional plotting service: R, plumber and ggplot2, all from Debian's archive (no CRAN, no compiler).
#
#   docker build -f plotter.dockerfile -t classifier-plotter .
#   docker run --rm -p 8090:8080 classifier-plotter
#   curl -H 'Content-Type: application/json' --data-binary @predict-answer.json localhost:8090/plot -o chart.png
#
# bookworm's packages: R 4.2.2, r-cran-plumber 1.2.1, r-cran-ggplot2 3.4.1, r-cran-ragg 1.2.5 (the PNG
# device: AGG and FreeType, no X11 and no cairo needed; ggplot2's own default when installed), and a font
# for it to draw text with. Versions pinned as hadolint asks; a Debian point release that moves one of
# them fails the build rather than ship something untested.
#
# The base is an argument: Debian slim by default. The tests build this with the machine's local Debian
# bookworm image (python:3.11-slim, made by debootstrap: no registry to pull debian:bookworm-slim from),
# --build-arg DEBIAN_IMAGE=python:3.11-slim; the Python in it is unused.
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE}
LABEL org.opencontainers.image.title="image-classifier-plotter" \
      org.opencontainers.image.description="ggplot2 charts of the image classifier's predictions (R plumber)"
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        r-cran-plumber=1.2.1+ds-1 \
        r-cran-ggplot2=3.4.1+dfsg-1 \
        r-cran-ragg=1.2.5-1 \
        fonts-dejavu-core=2.37-6 \
        tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 app \
    && useradd --no-log-init --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
# Cloud Run sets PORT; HOST must be 0.0.0.0 in a container. Fontconfig's cache goes to /tmp (the user has
# no home; Cloud Run's /tmp is in memory).
ENV HOST=0.0.0.0 \
    PORT=8080 \
    XDG_CACHE_HOME=/tmp/.cache \
    LANG=C.UTF-8
WORKDIR /app
COPY plotter/ plotter/
USER 10001:10001
EXPOSE 8080
# tini is PID 1 and passes SIGTERM on to R, which ends at once (a chart takes well under a second). As
# PID 1 itself, R would not get SIGTERM at all (the kernel drops signals PID 1 has no handler for): Cloud
# Run would wait its 10 s and kill it.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["Rscript", "plotter/main.R"]
