"""What runs inside a decoder process: untrusted bytes in, the model's input crop out, within a budget.

A decoder process (``main``, started by ``_pool.DecoderPool``) serves one image at a time over a pair of
pipes:

- **CPU time.** Each image gets a budget armed as a POSIX profiling timer (``ITIMER_PROF``: user + system
  time of this process). The kernel delivers ``SIGPROF`` when it is spent and, with no handler installed,
  terminates the process, even in the middle of C code that never returns to Python (libjpeg on a
  progressive JPEG of thousands of scans) or of Pillow's pure-Python decoders: the work is *stopped*, not
  abandoned. The pool sees the process die with ``-SIGPROF`` and answers that the image took too long.
- **Memory.** Reading the header may map 96 MB more than the process holds when the image arrives. Once
  the header is read, the bytes decoding will need (``decode_memory``) are leased from the server's
  decode-memory budget, shared by every decoder process; images within the allowance the budget reserves
  for every decode (all ordinary photos) do not ask. The server grants the lease, or refuses it (the
  budget is in use: retry later; or the image alone needs more than all of it). The process's address
  space is then capped (``RLIMIT_AS``) at what it uses now plus the lease, so an image needing more than
  its estimate fails with ``MemoryError`` instead of taking memory from the server.

Messages are a small JSON header and raw pixel bytes, never pickles: a process that parsed hostile bytes
is not trusted to send the server objects to unpickle.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

from common.image_statistics import image_statistics

from ._errors import ClassifierError, ImageError, ImageTooLarge, InvalidImage
from ._images import ImageLimits, decode_image
from ._preprocess import Preprocessing

_MAX_CONFIG_BYTES: Final = 1 << 20
# Decoders yield the CPU to inference, the slowest stage of the pipeline (a photo decodes several times
# faster than a forward pass runs): more images/s than decoders at nice 0, at 1 and at 16 clients
# (BENCHMARKS.md, "Measurements behind the code"). Expensive images are demoted further, to 19.
DECODER_PRIORITY: Final = 10
_SLACK_BYTES: Final = 64 << 20  # address space beyond the lease: Python objects, libraries' own buffers
# Until the lease, while Pillow parses the header in Python: a JPEG of 5 million empty segments made it
# keep ~700 MB of Python objects before a single pixel was decoded.
_HEADER_BYTES: Final = 96 << 20
OUT_OF_MEMORY: Final = 75  # exit statuses the server understands
CRASHED: Final = 76
OK: Final = "ok"
ERROR: Final = "error"
LEASE: Final = "lease"
READY: Final = "ready"
# The server's answers to a lease.
GRANTED: Final = b"granted"
BUSY: Final = b"busy"
TOO_LARGE: Final = b"too_large"


class MemoryBusy(ClassifierError):
    """The decode-memory budget is in use by other images now (503, retry)."""

    code = "decoder_busy"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a decoder process needs, sent once when it starts (as JSON: see the module docstring)."""

    preprocessing: Preprocessing
    limits: ImageLimits
    cpu_seconds: float  # per image
    memory_bytes: int  # the most one image may lease (the server's whole decode-memory budget)
    allowance_bytes: int = 32 << 20  # what a decode may use without asking (reserved for it by the server)
    statistics: bool = False  # also send the crop's image statistics (common.image_statistics): ~0.3 ms an image

    def to_json(self) -> str:
        return json.dumps(
            {
                "preprocessing": self.preprocessing.to_dict(),
                "max_bytes": self.limits.max_bytes,
                "max_pixels": self.limits.max_pixels,
                "cpu_seconds": self.cpu_seconds,
                "memory_bytes": self.memory_bytes,
                "allowance_bytes": self.allowance_bytes,
                "statistics": self.statistics,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        data = json.loads(text)
        return cls(
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            limits=ImageLimits(max_bytes=int(data["max_bytes"]), max_pixels=int(data["max_pixels"])),
            cpu_seconds=float(data["cpu_seconds"]),
            memory_bytes=int(data["memory_bytes"]),
            allowance_bytes=int(data["allowance_bytes"]),
            statistics=bool(data.get("statistics", False)),
        )


def too_large_for_memory(needed: int, budget: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"Decoding this image needs about {needed >> 20} MB of memory; the server allows {budget >> 20} MB. "
        "Send a smaller image, or one saved in a simpler format (a baseline JPEG or an 8-bit PNG)."
    )


def _address_space() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


class _Decoder:
    def __init__(self, receive: Connection, reply: Connection, config: WorkerConfig) -> None:
        self.receive = receive
        self.reply = reply
        self.config = config
        self._address_limit = resource.getrlimit(resource.RLIMIT_AS)

    def send(self, header: dict[str, Any], pixels: bytes = b"") -> None:
        self.reply.send_bytes(json.dumps(header).encode())
        if pixels:
            self.reply.send_bytes(pixels)

    def lease(self, needed: int) -> None:
        """Ask the server for ``needed`` bytes of its decode-memory budget; cap this process to match.

        Images needing no more than the allowance the server reserves for every decode (all ordinary
        photos: a 12-megapixel JPEG needs ~17 MB) do not ask: one round trip less per image.
        """
        if needed <= self.config.allowance_bytes:
            self.cap_address_space(needed + _SLACK_BYTES)
            return
        self.send({"status": LEASE, "bytes": needed})
        answer = self.receive.recv_bytes(64)
        if answer == TOO_LARGE:
            raise too_large_for_memory(needed, self.config.memory_bytes)
        if answer != GRANTED:
            raise MemoryBusy("The server is decoding other large images. Retry in a few seconds.")
        self.cap_address_space(needed + _SLACK_BYTES)

    def cap_address_space(self, extra: int) -> None:
        """Let this process map at most ``extra`` more bytes than it has now."""
        limit = _address_space() + extra
        _, hard = self._address_limit
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))

    def prepare(self, data: bytes) -> tuple[dict[str, Any], bytes]:
        preprocessing = self.config.preprocessing
        decoded = decode_image(data, self.config.limits, preprocessing.resize_size, reserve=self.lease)
        pixels = preprocessing(decoded.image)
        header: dict[str, Any] = {
            "status": OK,
            "format": decoded.format,
            "width": decoded.width,
            "height": decoded.height,
        }
        if self.config.statistics:
            header["statistics"] = list(image_statistics(pixels))
        return header, pixels.tobytes()

    def serve(self) -> None:
        self.send({"status": READY})
        while True:
            try:
                data = self.receive.recv_bytes()
            except (EOFError, OSError):
                return
            signal.setitimer(signal.ITIMER_PROF, self.config.cpu_seconds)
            try:
                self.cap_address_space(_HEADER_BYTES)
                header, pixels = self.prepare(data)
            except (ImageError, MemoryBusy) as exc:
                header, pixels = {"status": ERROR, "kind": type(exc).__name__, "message": exc.message}, b""
            except MemoryError:
                # Out of address space, Python itself can barely go on (raising and handling need memory):
                # end the process at once; the server answers 413 and starts another.
                os._exit(OUT_OF_MEMORY)
            except Exception as exc:  # a decoder bug on odd input is the input's problem: refuse the image
                message = InvalidImage(f"The image cannot be decoded ({type(exc).__name__}).").message
                header, pixels = {"status": ERROR, "kind": "InvalidImage", "message": message}, b""
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
                resource.setrlimit(resource.RLIMIT_AS, self._address_limit)
            del data
            try:
                self.send(header, pixels)
            except (EOFError, OSError):
                return


def main(receive: Connection, reply: Connection) -> None:
    """The decoder process: its configuration, then one image per message until the server closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops its decoders itself
    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # the budget's timer terminates the process
    warnings.simplefilter("ignore")  # Pillow's warnings are about the input, and stderr is not the server's log
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a process stopped by its budget leaves no core file
    os.setpriority(os.PRIO_PROCESS, 0, DECODER_PRIORITY)
    try:
        config = WorkerConfig.from_json(receive.recv_bytes(_MAX_CONFIG_BYTES).decode())
        _Decoder(receive, reply, config).serve()
    except MemoryError:
        os._exit(OUT_OF_MEMORY)
    except (EOFError, OSError):
        return
    except BaseException:  # no traceback on stderr, which is not the server's JSON log: the server reports it
        os._exit(CRASHED)
