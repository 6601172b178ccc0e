"""What the tests share, in one place (like full-stack-fastapi-template's ``tests/utils``).

- the machine: ``ROOT``, ``need``/``need_executable`` (skip a test whose tool is missing; in CI, fail),
  ``chromium()`` (Debian's Chromium driven by Playwright);
- real photos: ``CAT``, ``COFFEE`` and the classes a model may give them, ``jpeg_bytes``;
- real servers: ``backend_server``, ``frontend_server``, ``server_process``/``server_popen`` (any module,
  optionally on a fixed port, with the process handle), ``command_popen`` (any command), ``plotter_server``
  (the R plotting service), ``wait_for``, ``free_port`` (the benchmark's own);
- ``tests.helpers.fakes``: stand-in HTTP servers (a backend, the Cloud Run Admin API, ...);
- ``tests.helpers.tokens``: a local signing key, Google-style ID tokens and a certificate endpoint.
"""

from bench.server import free_port
from tests.helpers._environment import CHROMIUM, CHROMIUM_ARGS, IN_CI, ROOT, chromium, need, need_executable
from tests.helpers._photos import CAT, CAT_CLASSES, COFFEE, COFFEE_CLASSES, SKIMAGE_DATA, jpeg_bytes
from tests.helpers._servers import (
    backend_server,
    command_popen,
    frontend_server,
    plotter_server,
    server_popen,
    server_process,
    wait_for,
)

__all__ = [
    "CAT",
    "CAT_CLASSES",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "COFFEE",
    "COFFEE_CLASSES",
    "IN_CI",
    "ROOT",
    "SKIMAGE_DATA",
    "backend_server",
    "chromium",
    "command_popen",
    "free_port",
    "frontend_server",
    "jpeg_bytes",
    "need",
    "need_executable",
    "plotter_server",
    "server_popen",
    "server_process",
    "wait_for",
]
