-- GET /healthz: the daemon's HTTP path with no store work, to tell its part of a request's CPU.
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

function request()
  return wrk.format("GET", "/healthz")
end
