/**
 * The rate limiter's Lua scripts. Each runs atomically in Redis, so limits hold
 * across any number of gateway processes; time is Redis's own (TIME), so
 * gateways with skewed clocks still agree.
 *
 * Requests and tokens per minute are token buckets: capacity = the per-minute
 * limit, refilled continuously at limit/60 s. A bucket is a hash {level, ts};
 * a missing bucket is full. Concurrency is a sorted set of leases scored by
 * their expiry; once the set holds as many leases as the limit, expired ones
 * are purged and the rest counted, so a gateway that died holding leases gives
 * them back when they expire (below the limit the count with expired leases is
 * an upper bound that already admits: one command fewer per admission).
 *
 * A request is checked against every scope (the tenant, and the key when it
 * has limits of its own) and charged in all of them or in none.
 */
import { LuaScript } from "./lua-script.ts";
import { USAGE_FIELDS as F } from "./usage.ts";

/** Bucket arithmetic shared by the scripts (refill to `now`, clamp to capacity). */
const BUCKET = `
local WINDOW = 60000
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function read_bucket(key, cap, now)
  local v = redis.call('HMGET', key, 'level', 'ts')
  if not v[1] then return cap end
  local level = tonumber(v[1]) + (now - tonumber(v[2])) * cap / WINDOW
  if level > cap then return cap end
  return level
end
local function write_bucket(key, cap, level, now)
  redis.call('HSET', key, 'level', tostring(level), 'ts', now)
  -- Once full again the bucket equals a missing one: let it go.
  redis.call('PEXPIRE', key, math.ceil((cap - level) * WINDOW / cap) + 1000)
end
-- Milliseconds until the bucket holds 'need'.
local function wait_for(cap, level, need)
  if level >= need then return 0 end
  return math.ceil((need - level) * WINDOW / cap)
end
-- limit, remaining, ms until full: what the x-ratelimit-* headers report.
local function report(cap, level)
  local remaining = math.floor(level)
  if remaining < 0 then remaining = 0 end
  return {cap, remaining, wait_for(cap, level, cap)}
end
-- Of several scopes' reports, the one with the least remaining binds.
local function tighter(a, b)
  if a == nil or (b ~= nil and b[2] < a[2]) then return b end
  return a
end
`;

/**
 * Admission (or, with mode 'peek', just the current state). An admitted
 * request is counted in the usage hash; a refused one is counted by the
 * caller once it gives up (a request may wait for a concurrency slot first).
 * KEYS: per scope: request bucket, token bucket, leases; then the usage hash.
 * ARGV: mode, scope count, token cost, lease id, lease ttl ms, usage field
 *   prefix of the key, the usage hash's expiry (unix s), then per scope: rpm, tpm,
 *   concurrency (0: not limited in this scope).
 * Returns {admitted (1/0), reason, retry-after ms, requests report x3, tokens report x3};
 * reason: '' | 'requests' | 'tokens' | 'too_large' | 'concurrency'.
 */
export const ADMIT = new LuaScript(
  BUCKET + `
local mode, n, cost, lease, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local key_prefix, expire_at = ARGV[6], ARGV[7]
local now = now_ms()
local reason, wait = '', 0
-- The first failing check names the reason; the longest wait of all is the retry-after.
local function fail(why, ms)
  if reason == '' then reason = why end
  if ms > wait then wait = ms end
end
local req_levels, tok_levels = {}, {}
local req_report, tok_report
for i = 1, n do
  local rpm, tpm, conc = tonumber(ARGV[5 + 3 * i]), tonumber(ARGV[6 + 3 * i]), tonumber(ARGV[7 + 3 * i])
  if rpm > 0 then
    req_levels[i] = read_bucket(KEYS[3 * i - 2], rpm, now)
    if mode == 'admit' and req_levels[i] < 1 then fail('requests', wait_for(rpm, req_levels[i], 1)) end
  end
  if tpm > 0 then
    tok_levels[i] = read_bucket(KEYS[3 * i - 1], tpm, now)
    if mode == 'admit' then
      if cost > tpm then fail('too_large', WINDOW)
      elseif tok_levels[i] < cost then fail('tokens', wait_for(tpm, tok_levels[i], cost)) end
    end
  end
  if conc > 0 and mode == 'admit' and redis.call('ZCARD', KEYS[3 * i]) >= conc then
    redis.call('ZREMRANGEBYSCORE', KEYS[3 * i], '-inf', now)
    -- When a running request ends is unknowable: a second is a fair guess.
    if redis.call('ZCARD', KEYS[3 * i]) >= conc then fail('concurrency', 1000) end
  end
end
if mode == 'admit' and reason == '' then
  local usage = KEYS[3 * n + 1]
    for i = 1, n do
      local rpm, tpm, conc = tonumber(ARGV[5 + 3 * i]), tonumber(ARGV[6 + 3 * i]), tonumber(ARGV[7 + 3 * i])
      if rpm > 0 then req_levels[i] = req_levels[i] - 1; write_bucket(KEYS[3 * i - 2], rpm, req_levels[i], now) end
      if tpm > 0 then tok_levels[i] = tok_levels[i] - cost; write_bucket(KEYS[3 * i - 1], tpm, tok_levels[i], now) end
      if conc > 0 then
        redis.call('ZADD', KEYS[3 * i], now + ttl, lease)
        redis.call('PEXPIRE', KEYS[3 * i], ttl * 2)
      end
    end
  -- A counter that starts here may start the hash: give it its day's expiry (the same instant
  -- whoever sets it, so once per new counter is enough, not once per request).
  if redis.call('HINCRBY', usage, key_prefix .. '${F.requests}', 1) == 1 then
    redis.call('EXPIREAT', usage, expire_at)
  end
end
for i = 1, n do
  local rpm, tpm = tonumber(ARGV[5 + 3 * i]), tonumber(ARGV[6 + 3 * i])
  if rpm > 0 then req_report = tighter(req_report, report(rpm, req_levels[i])) end
  if tpm > 0 then tok_report = tighter(tok_report, report(tpm, tok_levels[i])) end
end
req_report = req_report or {0, 0, 0}
tok_report = tok_report or {0, 0, 0}
return {reason == '' and 1 or 0, reason, wait,
  req_report[1], req_report[2], req_report[3], tok_report[1], tok_report[2], tok_report[3]}
`,
);

/**
 * The end of an admitted request: returns the unused part of the token
 * reservation, releases the concurrency lease and records the usage the
 * client was told about. A withdrawn request (refused after its admission,
 * by a check that refuses before admission otherwise) also gets its request
 * back in the request buckets and is taken out of the usage's request count:
 * as if it had never been admitted.
 * KEYS: per scope: request bucket, token bucket, leases; then the usage hash.
 * ARGV: scope count, refund (reserved - used), lease id, usage field prefix of
 *   the key, prompt tokens, completion tokens, the usage hash's expiry (unix s), release
 *   channel, tenant id, withdrawn (1/0), then per scope: rpm, tpm, concurrency
 *   (0: not limited in this scope).
 * A slot released in a scope that was at its cap is announced on the release
 * channel (message: tenant id), so requests waiting for one retry at once.
 */
export const SETTLE = new LuaScript(
  BUCKET + `
local n, refund, lease, key_prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local prompt, completion, expire_at = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local withdrawn = ARGV[10] == '1'
-- Read only when a bucket is written: a request that used all it reserved writes none.
local now
local was_full = false
local function give_back(key, cap, amount)
  now = now or now_ms()
  local level = read_bucket(key, cap, now) + amount
  if level > cap then level = cap end
  write_bucket(key, cap, level, now)
end
for i = 1, n do
  local rpm, tpm, conc = tonumber(ARGV[8 + 3 * i]), tonumber(ARGV[9 + 3 * i]), tonumber(ARGV[10 + 3 * i])
  if rpm > 0 and withdrawn then give_back(KEYS[3 * i - 2], rpm, 1) end
  if tpm > 0 and refund ~= 0 then give_back(KEYS[3 * i - 1], tpm, refund) end
  if conc > 0 then
    local held = redis.call('ZCARD', KEYS[3 * i])
    if redis.call('ZREM', KEYS[3 * i], lease) == 1 and held >= conc then was_full = true end
  end
end
-- Only a scope that was at its cap can have requests waiting for a slot.
if was_full then redis.call('PUBLISH', ARGV[8], ARGV[9]) end
local usage = KEYS[3 * n + 1]
-- As in admission: a counter that starts here may start the hash (a request that ends on a
-- later day than it began); it gets its day's expiry.
local started = false
if withdrawn then
  started = redis.call('HINCRBY', usage, key_prefix .. '${F.requests}', -1) == -1
end
if prompt > 0 or completion > 0 then
  local p = redis.call('HINCRBY', usage, key_prefix .. '${F.promptTokens}', prompt)
  local c = redis.call('HINCRBY', usage, key_prefix .. '${F.completionTokens}', completion)
  started = started or p == prompt or c == completion
end
if started then redis.call('EXPIREAT', usage, expire_at) end
return 1
`,
);

/**
 * Keeps leases of live requests from expiring (only those still present: a
 * lease purged after a stall is not resurrected; one expired but not yet
 * purged, its request still live, counts again).
 * KEYS: the lease sets holding the lease. ARGV: lease id, ttl ms.
 */
export const REFRESH_LEASE = new LuaScript(
  BUCKET + `
local expiry = now_ms() + tonumber(ARGV[2])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', expiry, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2]) * 2)
end
return 1
`,
);
