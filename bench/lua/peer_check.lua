-- The Django peer's GET /sms_check/ with a wrong code, on one of its pre-created sessions.
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")
local keys = {}
for line in io.lines(os.getenv("BENCH_PEER_KEYS")) do keys[#keys + 1] = line end

function request()
  local h = { ["Cookie"] = "sessionid=" .. keys[math.random(1, #keys)] }
  return wrk.format("GET", "/sms_check/?phone=%2B15550001000&code=000000", h)
end
