-- POST /v1/verifications/check with a wrong code: round robin over the 5000 seeded "w"
-- sessions, each with a pending code for its own number (max_attempts = 100, so 500 000 wrong
-- checks stay "pending" before codes start answering max_attempts_reached).
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

function request()
  local k = (n * threads + tid - 1) % 5000
  n = n + 1
  return wrk.format("POST", "/v1/verifications/check", json_headers(key("w", k)),
    '{"phone":"' .. phone_of("w", k) .. '","code":"000000"}')
end
