-- wrk script: POST the same body on every request, with optional headers, and print the run's figures as one
-- JSON line, which bench/server.py reads. BENCH_BODY: the file to send;
-- BENCH_CONTENT_TYPE (may be empty: none, as tritonclient sends); BENCH_INFERENCE_HEADER: the Open Inference
-- Protocol's Inference-Header-Content-Length (empty: none).
local file = assert(io.open(assert(os.getenv("BENCH_BODY"), "set BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
local content_type = os.getenv("BENCH_CONTENT_TYPE")
if content_type and content_type ~= "" then wrk.headers["Content-Type"] = content_type end
local header_length = os.getenv("BENCH_INFERENCE_HEADER")
if header_length and header_length ~= "" then wrk.headers["Inference-Header-Content-Length"] = header_length end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "mean_us": %.1f, "p50_us": %d, '
      .. '"p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max
  ))
end
