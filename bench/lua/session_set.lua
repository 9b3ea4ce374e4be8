-- PUT /v1/sessions/{key}/data/cart through the backend API (API key), random seeded session.
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

function request()
  local h = { ["Authorization"] = "Bearer " .. api_key, ["Content-Type"] = "application/json" }
  local body = string.format('{"value":{"items":%d}}', math.random(0, 99))
  return wrk.format("PUT", "/v1/sessions/" .. key("s", math.random(0, 999)) .. "/data/cart", h, body)
end
