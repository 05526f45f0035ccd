-- wrk script: every request is an `order.created` webhook for an order the gateway has never
-- seen. A repeated order id is answered from the stored first answer without creating
-- anything, which is far cheaper than a new order and would inflate the figure; the
-- benchmark's `ingest` mode checks the gateway's own counters for that (BENCHMARKS.md,
-- "Ingest driven by wrk").
--
--   wrk -t2 -c32 -d20s -s crates/bench/scripts/unique_orders.lua \
--       http://127.0.0.1:PORT/kuper-webhook [-- BODY.json]
--
-- BODY.json (or KB_BODY): the request body. `kuper-bridge-bench ingest` writes the one its
-- built-in client sends and prints the command with it. The default is the recorded fixture
-- fixtures/webhooks/order.created.kuper-delivery.json (found next to this script's checkout).
-- Only the ids and the dates are replaced; the rest of the body is sent as it is.
-- KB_WEBHOOK_AUTH: user:password of the webhook's Basic auth (default kuper:secret, what the
-- benchmark configures).

local FIXTURE = "fixtures/webhooks/order.created.kuper-delivery.json"

local function script_dir()
  local source = debug.getinfo(1, "S").source
  if source:sub(1, 1) ~= "@" then
    return nil
  end
  return source:sub(2):match("^(.*)/[^/]*$") or "."
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local text = f:read("*a")
  f:close()
  return text
end

-- A relative default must work from the repository root and from anywhere else.
local function default_body()
  local text = read_file(FIXTURE)
  if text then
    return text, FIXTURE
  end
  local dir = script_dir()
  if dir then
    local path = dir .. "/../../../" .. FIXTURE
    text = read_file(path)
    if text then
      return text, path
    end
  end
  error("unique_orders.lua: cannot read " .. FIXTURE .. "; run from the repository root or pass -- BODY.json")
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local quad = {}
    for k = 3, 0, -1 do
      local idx = math.floor(n / 64 ^ k) % 64
      quad[#quad + 1] = B64:sub(idx + 1, idx + 1)
    end
    if not b then
      quad[3], quad[4] = "=", "="
    elseif not c then
      quad[4] = "="
    end
    out[#out + 1] = table.concat(quad)
  end
  return table.concat(out)
end

-- Distinct between runs against the same gateway, including two started in the same second.
local function run_nonce()
  local f = io.open("/dev/urandom", "rb")
  if f then
    local bytes = f:read(4)
    f:close()
    if bytes and #bytes == 4 then
      return string.format("%02x%02x%02x%02x", bytes:byte(1, 4))
    end
  end
  return string.format("%08x", os.time() % 4294967296)
end

-- setup() runs in wrk's main Lua state and hands each thread's state its number and the
-- run's nonce (globals there); the script's top level runs once per state.
local threads = {}
local run_id = run_nonce()

function setup(thread)
  thread:set("thread_no", #threads)
  thread:set("nonce", run_id)
  threads[#threads + 1] = thread
end

local ID_SLOT = "\1KB_ID\1"
local UUID_SLOT = "\1KB_UUID\1"
local parts, slots, headers, path
issued = 0

local function set_string(text, key, value)
  local replaced, n = text:gsub('("' .. key .. '"%s*:%s*)"[^"]*"', "%1\"" .. value .. "\"", 1)
  return replaced, n
end

function init(args)
  local text, source
  local explicit = args[1] or os.getenv("KB_BODY")
  if explicit and explicit ~= "" then
    text, source = read_file(explicit), explicit
    if not text then
      error("unique_orders.lua: cannot read " .. explicit)
    end
  else
    text, source = default_body()
  end

  -- As if Kuper sent it now: past dates would make every order "missed" at the gateway's
  -- first deadline sweep, an extra write per order during the run.
  local now = os.time()
  local function at(t)
    return os.date("!%Y-%m-%dT%H:%M:%S+00:00", t)
  end
  text = set_string(text, "timestamp", at(now))
  text = set_string(text, "expectedFrom", at(now + 2 * 3600))
  text = set_string(text, "expectedTo", at(now + 3 * 3600))

  local n_id, n_uuid
  text, n_id = set_string(text, "originalOrderId", ID_SLOT)
  text, n_uuid = set_string(text, "orderUUID", UUID_SLOT)
  if n_id ~= 1 or n_uuid ~= 1 then
    error("unique_orders.lua: " .. source .. " has no payload.originalOrderId and payload.orderUUID strings")
  end

  -- The body split around the two ids (in whichever order they appear), so that a request
  -- costs a few concatenations, not a search.
  parts, slots = {}, {}
  local pos = 1
  while true do
    local i = text:find("\1KB_", pos, true)
    if not i then
      break
    end
    parts[#parts + 1] = text:sub(pos, i - 1)
    if text:sub(i, i + #ID_SLOT - 1) == ID_SLOT then
      slots[#slots + 1] = "id"
      pos = i + #ID_SLOT
    else
      slots[#slots + 1] = "uuid"
      pos = i + #UUID_SLOT
    end
  end
  parts[#parts + 1] = text:sub(pos)

  local auth = os.getenv("KB_WEBHOOK_AUTH")
  if not auth or auth == "" then
    auth = "kuper:secret"
  end
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Basic " .. base64(auth),
  }
  path = wrk.path
end

function request()
  issued = issued + 1
  local key = string.format("%s-%d-%d", nonce, thread_no, issued)
  local values = { id = "W" .. key, uuid = "wrk:" .. key }
  local body = parts[1] .. values[slots[1]] .. parts[2] .. values[slots[2]] .. parts[3]
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + (t:get("issued") or 0)
  end
  io.write(string.format(
    "unique_orders.lua: %d distinct order ids issued by %d thread(s) (run %s); %d responses, %d non-2xx/3xx, %d socket errors\n",
    total,
    #threads,
    run_id,
    summary.requests,
    summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  ))
end
