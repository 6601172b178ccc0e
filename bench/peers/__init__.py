"""``python -m bench --peers``: this project's server beside BentoML, LitServe, TorchServe and PyTriton.

- ``contenders``: each server, how it is installed, started and configured, and the request its clients send;
- ``services/``: the peers' own service code, run inside their venvs (``.venv-peers/<name>``), all doing the
  same model work (``services/_model.py``);
- ``requirements/``: each peer's fully pinned, hash-checked requirements (``<name>.in`` compiled by uv);
- ``harness``: installing, starting, checking answers, loading with wrk; ``cli``: the rounds; ``report``: the
  Peers section of BENCHMARKS.md. See docs/benchmark.md, *Peers*.
"""
