-- wrk script of bench/jobs.py: the bearer token from HPCGW_BENCH_TOKEN on every request, and
-- one JSON line of figures at the end (latencies in microseconds, over all threads).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("HPCGW_BENCH_TOKEN")
-- bench/edge.py: the client's copy named, so that the answer is a 304 (wrk counts >= 400 only)
local etag = os.getenv("HPCGW_BENCH_IF_NONE_MATCH")
if etag then wrk.headers["If-None-Match"] = etag end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests":%d,"duration_us":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout, e.status))
end
