-- POST /v1/verifications as a browser: one of the 1000 seeded sessions (cookie) and a random
-- number per request, so no request meets a resend cooldown. Every request issues a new code.
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

function request()
  local s = key("s", math.random(0, 999))
  local p = string.format("+1201%d%06d", math.random(5, 9), math.random(0, 999999))
  return wrk.format("POST", "/v1/verifications", json_headers(s), '{"phone":"' .. p .. '"}')
end
