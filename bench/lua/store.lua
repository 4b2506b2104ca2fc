-- wrk script: single-key put batches to a store primary, each a new key.
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
  local body = string.format(
    '{"ops":[{"op":"put","key":"bench/%d/%d/%d","value":{"n":%d,"payload":"0123456789abcdef0123456789abcdef"}}]}',
    thread_id, counter, math.random(1, 1e9), counter)
  return wrk.format("POST", "/v1/batch", { ["Content-Type"] = "application/json" }, body)
end
