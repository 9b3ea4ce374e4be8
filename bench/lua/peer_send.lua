-- The Django peer's GET /sms_send/?phone=… with one of its pre-created sessions (cookie).
dofile(os.getenv("BENCH_DIR") .. "/lua/common.lua")
local keys = {}
for line in io.lines(os.getenv("BENCH_PEER_KEYS")) do keys[#keys + 1] = line end

function request()
  local p = string.format("%%2B1555%07d", math.random(0, 9999999))
  local h = { ["Cookie"] = "sessionid=" .. keys[math.random(1, #keys)] }
  return wrk.format("GET", "/sms_send/?phone=" .. p, h)
end
