-- GET /v1/sessions/{key} through the backend API (API key), random seeded session.
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

function request()
  local h = { ["Authorization"] = "Bearer " .. api_key }
  return wrk.format("GET", "/v1/sessions/" .. key("s", math.random(0, 999)), h)
end
