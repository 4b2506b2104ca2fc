-- One-key store batches (a put to one of 1,000 keys), for bench/store-failover.sh.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = '{"ops":[{"op":"put","key":"bench/' .. (n % 1000) .. '","value":' .. n .. '}]}'
  return wrk.format(nil, "/v1/batch", nil, body)
end
