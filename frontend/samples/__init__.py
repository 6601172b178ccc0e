"""Sample photos bundled with the frontend (from scikit-image's data folder; see README.md here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Sample:
    key: str
    title: str
    filename: str

    @property
    def path(self) -> Path:
        return SAMPLES_DIR / self.filename

    def read(self) -> bytes:
        return self.path.read_bytes()


SAMPLES: tuple[Sample, ...] = (
    Sample("cat", ":material/pets: Cat", "cat.jpg"),
    Sample("coffee", ":material/coffee: Coffee", "coffee.jpg"),
    Sample("rocket", ":material/rocket_launch: Rocket", "rocket.jpg"),
    Sample("astronaut", ":material/person: Astronaut", "astronaut.jpg"),
)
SAMPLES_BY_KEY = {sample.key: sample for sample in SAMPLES}
