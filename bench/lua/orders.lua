-- wrk script: POST /api/v1/orders with a fresh Idempotency-Key per request, rotating
-- through the tokens in $TOKENS (one per line). Optional $PACE_MS: a pause before each
-- request of a connection, to hold a fixed rate.
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local pace = tonumber(os.getenv("PACE_MS") or "0")
local counter = 0
-- `thread_id` is a global that setup() gives each thread (a local would shadow it).
local threads = 0

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function init(args)
  math.randomseed(os.time() * 1000 + thread_id)
end

function request()
  counter = counter + 1
  local token = tokens[(counter * 7 + thread_id) % #tokens + 1]
  local body = string.format('{"items":[{"product_id":%d,"quantity":%d}]}', counter % 50 + 1, counter % 3 + 1)
  return wrk.format("POST", "/api/v1/orders", {
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = string.format("bench-%d-%d-%d", thread_id, counter, math.random(1, 1e9)),
    ["Content-Type"] = "application/json",
  }, body)
end

function delay()
  return pace
end
