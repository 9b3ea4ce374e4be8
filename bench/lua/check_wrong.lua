-- POST /v1/verifications/check with a wrong code: round robin over the 20 000 seeded "w"
-- sessions, each with a pending code for its own number (bench/seed.py says why that many).
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

function request()
  local k = (n * threads + tid - 1) % 20000
  n = n + 1
  return wrk.format("POST", "/v1/verifications/check", json_headers(key("w", k)),
    '{"phone":"' .. phone_of("w", k) .. '","code":"000000"}')
end
