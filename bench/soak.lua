-- Rotates the requests below; counts answers by status in each thread (summed in done()).
local token = "__TOKEN__"
local served = "__SERVED__"          -- name:version the service serves
local name, version = served:match("([^:]+):(.+)")
local latent = {}
for i = 1, 100 do latent[i] = string.format("%.4f", math.sin(i)) end
local latent_json = "[" .. table.concat(latent, ",") .. "]"
local big = string.rep("1,", 9 * 1024 * 1024 / 2)  -- a 9 MiB body, over the 8 MiB limit
local auth = {["Authorization"] = "Bearer " .. token}
local json_h = {["Content-Type"] = "application/json"}

local function hex(n)
  local t = {}
  for i = 1, n do t[i] = string.format("%x", math.random(0, 15)) end
  return table.concat(t)
end

local function raw(lines) return table.concat(lines, "\r\n") .. "\r\n\r\n" end

local kinds = {
  -- valid
  {"valid", function() return wrk.format("GET", "/generate?digit=" .. math.random(0, 9) .. "&seed=" .. math.random(0, 1e6)) end},
  {"valid", function() return wrk.format("GET", "/generate?digit=3&n=16&seed=" .. math.random(0, 1e6)) end},
  {"valid", function() return wrk.format("GET", "/generate?digit=7&n=4&format=npy") end},
  {"valid", function() return wrk.format("POST", "/generate", json_h, '{"digits": [1, 2, 3], "seed": ' .. math.random(0, 1e6) .. '}') end},
  {"valid", function() return wrk.format("POST", "/generate", json_h, '{"latents": [' .. latent_json .. ',' .. latent_json .. '], "digits": [5]}') end},
  {"valid", function() return wrk.format("GET", "/interpolate?digit=4&seed_a=1&seed_b=" .. math.random(2, 1e6) .. "&steps=8") end},
  {"valid", function() return wrk.format("GET", "/models") end},
  {"valid", function() return wrk.format("GET", "/version") end},
  {"valid", function() return wrk.format("GET", "/generate?digit=2&model=" .. name .. ":" .. version:sub(1, 5)) end},
  {"valid", function() return wrk.format("GET", "/generate?digit=2&model=" .. name:upper() .. ":" .. version:upper()) end},
  {"valid", function() return wrk.format("GET", "/generate?digit=2&model=" .. name .. ":latest") end},
  {"valid", function() return wrk.format("GET", "/jobs?limit=5", auth) end},
  {"valid", function() return raw({"POST /generate HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", "Transfer-Encoding: chunked", "", "e", '{"digits": [8]', "1", "}", "0"}) end},
  -- invalid
  {"invalid", function() return wrk.format("GET", "/generate?digit=10") end},
  {"invalid", function() return wrk.format("GET", "/generate?digit=7&n=0") end},
  {"invalid", function() return wrk.format("GET", "/generate?digit=7&seed=-1&format=gif") end},
  {"invalid", function() return wrk.format("GET", "/generate?digit=7&model=mnist-nothing") end},
  {"invalid", function() return wrk.format("GET", "/generate?digit=7&model=" .. name .. ":nosuch" .. hex(6)) end},
  {"invalid", function() return wrk.format("GET", "/interpolate?seed_a=1&seed_b=2&steps=99&digit=1") end},
  {"invalid", function() return wrk.format("POST", "/generate", json_h, '{"digits": [1, 2') end},
  {"invalid", function() return wrk.format("POST", "/generate", json_h, '{"digits": [1, 2], "n": 5}') end},
  {"invalid", function() return wrk.format("POST", "/generate", json_h, '{"latents": [[0.1, 0.2]], "digits": [1]}') end},
  {"invalid", function() return wrk.format("POST", "/generate", json_h, '{"latents": [' .. latent_json .. '], "seed": 4}') end},
  {"invalid", function() return wrk.format("POST", "/generate", json_h, '{"digits": [1], "colour": "red"}') end},
  {"invalid", function() return wrk.format("POST", "/jobs", {["Authorization"] = auth["Authorization"], ["Content-Type"] = "application/json"}, '{"latent_dim": 0}') end},
  -- hostile
  {"hostile", function() return wrk.format("GET", "/" .. hex(12) .. "/" .. hex(8)) end},
  {"hostile", function() return wrk.format("GET", "/jobs/" .. hex(16), auth) end},
  {"hostile", function() return wrk.format("GET", "/jobs/" .. hex(16) .. "/samples.png", auth) end},
  {"hostile", function() return wrk.format("DELETE", "/jobs/" .. hex(16)) end},
  {"hostile", function() return wrk.format("GET", "/jobs/" .. hex(8) .. "/..%2f..%2fetc%2fpasswd", auth) end},
  {"hostile", function() return wrk.format("GET", "/jobs/..%2f..%2fetc/passwd", auth) end},
  {"hostile", function() return wrk.format("GET", "/playground/..%2f..%2fganforge%2fsettings.py") end},
  {"hostile", function() return wrk.format("GET", "/jobs/%2e%2e%00/samples.png", auth) end},
  {"hostile", function() return wrk.format("FOO", "/generate") end},
  {"hostile", function() return wrk.format("PURGE", "/jobs/" .. hex(8)) end},
  {"hostile", function() return wrk.format("GET", "/jobs", {["Authorization"] = "Bearer \xc3\xa9t\xc3\xa9"}) end},
  {"hostile", function() return wrk.format("GET", "/jobs", {["Authorization"] = "Bearer \xff\xfe"}) end},
  {"hostile", function() return raw({"POST /generate HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", "Content-Length: 60000000"}) end},
  {"hostile", function() return raw({"POST /jobs HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", "Content-Length: 60000000"}) end},
}
local huge = {"hostile", function() return wrk.format("POST", "/generate", json_h, "[" .. big .. "1]") end}

local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 100 + id)
  statuses = {}
  sent = {valid = 0, invalid = 0, hostile = 0}
  n = 0
end

function request()
  n = n + 1
  local kind = kinds[(n % #kinds) + 1]
  if n % 500 == 0 then kind = huge end  -- rare: 9 MiB each
  sent[kind[1]] = sent[kind[1]] + 1
  return kind[2]()
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total_status, total_sent = {}, {valid = 0, invalid = 0, hostile = 0}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total_status[k] = (total_status[k] or 0) + v end
    for k, v in pairs(t:get("sent")) do total_sent[k] = total_sent[k] + v end
  end
  local parts = {}
  for k, v in pairs(total_status) do table.insert(parts, string.format('"%d": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.1f, "rps": %.1f, "p50_ms": %.2f, "p99_ms": %.2f, ' ..
    '"max_ms": %.1f, "socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"sent": {"valid": %d, "invalid": %d, "hostile": %d}, "statuses": {%s}}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.timeout, total_sent.valid, total_sent.invalid,
    total_sent.hostile, table.concat(parts, ", ")))
end
