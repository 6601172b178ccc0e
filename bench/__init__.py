"""``python -m bench``: how fast the classifier is, from the model alone to the server over HTTP.

One run measures the in-process ceiling (model alone, then decode + preprocess + model), the real
server (``python -m backend``) under ``wrk`` at several concurrencies in a naive and in the default
configuration, cold start and memory, and writes BENCHMARKS.md with a plot. See docs/benchmark.md.
"""
