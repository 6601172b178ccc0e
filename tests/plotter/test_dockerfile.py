"""plotter.dockerfile, read without building it (hadolint and the build context are checked with the
others in tests/containers/test_dockerfiles.py): Debian's R packages, a non-root user, $PORT, tini."""

from __future__ import annotations

import json
import re

from tests.containers.test_dockerfiles import PLOTTER_DOCKERFILE, parse
from tests.helpers import ROOT


def test_plotter_dockerfile_policy() -> None:
    global_args, stages = parse(PLOTTER_DOCKERFILE)
    # a Debian slim base by default, an argument so the tests can build from the local Debian image
    assert global_args == {"DEBIAN_IMAGE": "debian:bookworm-slim"}
    (final,) = stages
    assert final.base == "${DEBIAN_IMAGE}"
    (install,) = [run for run in final.all("RUN") if "apt-get install" in run]
    assert "--no-install-recommends" in install
    assert "rm -rf /var/lib/apt/lists/*" in install
    packages = set(re.findall(r"\b(r-cran-[a-z0-9]+|fonts-[a-z-]+|tini)=", install))
    assert packages == {"r-cran-plumber", "r-cran-ggplot2", "r-cran-ragg", "fonts-dejavu-core", "tini"}
    assert "r-base-dev" not in install  # Debian's builds: no compiler, no CRAN
    assert "install.packages" not in install
    (user,) = final.all("USER")
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), user
    env = final.env()
    assert (env["HOST"], env["PORT"]) == ("0.0.0.0", "8080")
    assert final.all("EXPOSE") == ["8080"]
    assert json.loads(final.all("ENTRYPOINT")[0]) == ["/usr/bin/tini", "--"]  # R as PID 1 would ignore SIGTERM
    assert final.instructions[-1][0] == "CMD"
    assert json.loads(final.all("CMD")[0]) == ["Rscript", "plotter/main.R"]
    assert final.all("COPY") == ["plotter/ plotter/"]
    assert not final.all("ADD")
    # the entry point and the API it serves are what the image copies
    assert (ROOT / "plotter" / "main.R").is_file()
    assert (ROOT / "plotter" / "plumber.R").is_file()
