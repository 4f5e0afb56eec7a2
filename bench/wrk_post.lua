-- wrk script for the CloudEasyML bench: POST a fixed JSON body with a Bearer key, report one JSON line.
--
-- Environment (set by bench/load.py):
--   BENCH_BODY_FILE  path of the request body (read once per wrk thread)
--   BENCH_TOKEN      API key sent as "Authorization: Bearer <key>" (optional)
--
-- done() prints a single line starting with "BENCH_JSON " that bench/load.py parses. Latencies are in
-- microseconds, as wrk records them. No response() callback is defined: it would slow wrk down.

local function read_file(path)
  local handle = assert(io.open(path, "rb"))
  local content = handle:read("*a")
  handle:close()
  return content
end

function init(args)
  wrk.method = "POST"
  wrk.body = read_file(os.getenv("BENCH_BODY_FILE"))
  wrk.headers["Content-Type"] = "application/json"
  local token = os.getenv("BENCH_TOKEN")
  if token ~= nil and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%.0f,"durationUs":%.0f,"bytes":%.0f,' ..
    '"connectErrors":%.0f,"readErrors":%.0f,"writeErrors":%.0f,"statusErrors":%.0f,"timeouts":%.0f,' ..
    '"p50Us":%.0f,"p90Us":%.0f,"p99Us":%.0f,"maxUs":%.0f,"meanUs":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
