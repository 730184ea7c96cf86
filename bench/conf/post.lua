-- wrk script: POST /task with the Andera headers; prints one JSON line at the end.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"group":"default","function":"hello","contract":1,"input":{}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_LB_KEY") or ""
wrk.headers["x-lb-auth"] = os.getenv("BENCH_LB_KEY") or ""
wrk.headers["x-wr-auth"] = os.getenv("BENCH_WK_KEY") or ""

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
