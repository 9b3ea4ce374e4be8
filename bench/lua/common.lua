-- Shared by the wrk scripts (loaded with dofile): thread numbering, the seeded key names (see
-- bench/seed.py), optional pacing, and one machine-readable RESULT line for bench/report.py.
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

threads = tonumber(os.getenv("BENCH_THREADS") or "2")
api_key = os.getenv("BENCH_API_KEY") or ""
function key(kind, i)
  return kind .. string.format("%031d", i)
end

-- The number of a seeded verification: one per session, as real traffic has (the check locks a
-- per-number failure counter, so one shared number would serialise every check). Must match
-- bench/seed.py and bench/pgbench/check.sql.
local prefix = { w = "+12016", r = "+12017" }
function phone_of(kind, i)
  return prefix[kind] .. string.format("%06d", i)
end

function json_headers(cookie)
  local h = { ["Content-Type"] = "application/json" }
  if cookie then h["Cookie"] = "sessionid=" .. cookie end
  return h
end

-- Pacing for the latency runs: every connection waits before each request, so the offered rate
-- is about connections * 1000 / (delay + latency) per second (wrk has no -R). The wait is drawn
-- from an exponential distribution with mean BENCH_DELAY_MS, so the requests of independent
-- connections arrive as a Poisson stream, as independent users' do (and as pgbench -R paces).
-- A fixed wait kept the connections in step: they had started together, so they sent in bursts
-- of 32, and the latency measured the burst's queue (p50 13 ms at half the rate, 2.6 ms paced so).
local pace = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pace then
  function delay() return math.floor(-pace * math.log(1 - math.random()) + 0.5) end
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
  n = 0
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,' ..
    '"max_ms":%.3f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
