-- POST /v1/verifications/check with the right code: every request approves a different seeded
-- "r" session (120 000 of them), so each is a real approval — code spent, verified_phone
-- merged into the session, key cycled. Beyond the seeded pool requests answer 404 (counted
-- as non-2xx).
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")

function request()
  local k = n * threads + tid - 1
  n = n + 1
  return wrk.format("POST", "/v1/verifications/check", json_headers(key("r", k)),
    '{"phone":"' .. phone_of("r", k) .. '","code":"123456"}')
end
