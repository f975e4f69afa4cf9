"""The Lua scripts: every multi-key change to an experiment is one of these, run atomically.

Each script touches only keys of one experiment (one hash tag), so it runs on one shard of a
Redis Cluster. Numbers are written with ``%.17g``: Redis' default Lua number formatting keeps
only 14 significant digits. Floats are returned as strings, since Redis truncates Lua numbers
in replies to integers. Times come from the server's ``TIME``, one clock for all processes.

Arm state in the ``stats`` hash, per arm index ``i``: ``i:s``/``i:f`` (bernoulli successes and
failures) or ``i:w``/``i:m``/``i:q`` (gaussian weight, mean and sum of squared deviations),
``i:n`` (raw observations, never forgotten) and ``i:t`` (server time the state was last decayed
to). A guardrail metric's state has the same fields under ``i|<metric>|<b or g>`` (its kind's
initial), and ``held`` lists the arms its hard gate holds (``SET_HELD``). With a half-life
``h``, state older by ``d`` seconds weighs ``2^(-d/h)``: every writer first
decays an arm to now, then adds, so forgetting needs no background job and no read-modify-write
from Python.
"""

from __future__ import annotations

# Tells every service process that an experiment changed (``bandit.serving.changes``): publishes the
# id on `<prefix>:changes`, at most once per 100 ms per experiment (a `notified` key with that
# expiry holds the others back). Expects KEYS[1] = `<prefix>:{<id>}:meta`.
_NOTIFY = r"""
local function notify()
  local prefix, id = string.match(KEYS[1], '^(.*):{(.*)}:meta$')
  if redis.call('SET', prefix .. ':{' .. id .. '}:notified', '1', 'PX', 100, 'NX') then
    redis.call('PUBLISH', prefix .. ':changes', id)
  end
end
"""

# Shared helpers, prepended to the scripts that change arm state. Expects KEYS[1] = meta and
# KEYS[2] = stats; defines `half_life`, `gaussian`, `now`, `load(arm)`, `weight_since(t)`,
# `save()`; returns -1 / -2 from the script when the experiment is missing / archived.
_ARM_STATE = _NOTIFY + r"""
local meta = redis.call('HMGET', KEYS[1], 'reward', 'half_life', 'archived')
if not meta[1] then return {-1} end
if meta[3] == '1' then return {-2} end
local gaussian = meta[1] == 'gaussian'
local half_life = tonumber(meta[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local arms = {}

local function fmt(x) return string.format('%.17g', x) end

local function weight_since(t)
  if half_life == nil or t >= now then return 1 end
  return 2 ^ (-(now - t) / half_life)
end

local function load(arm)
  local state = arms[arm]
  if state then return state end
  local p = arm .. ':'
  local v = redis.call('HMGET', KEYS[2], p .. 's', p .. 'f', p .. 'w', p .. 'm', p .. 'q',
                       p .. 'n', p .. 't')
  state = {s = tonumber(v[1]) or 0, f = tonumber(v[2]) or 0, w = tonumber(v[3]) or 0,
           m = tonumber(v[4]) or 0, q = tonumber(v[5]) or 0, n = tonumber(v[6]) or 0,
           g = gaussian}
  -- A guardrail metric's state (`<arm>|<metric>|<kind initial>`) is of its own kind.
  local kind = string.match(arm, '|(%a)$')
  if kind then state.g = kind == 'g' end
  local t = tonumber(v[7])
  if t then
    local d = weight_since(t)
    state.s, state.f, state.w, state.q = state.s * d, state.f * d, state.w * d, state.q * d
  end
  arms[arm] = state
  return state
end

local function save()
  local changed = false
  for arm, st in pairs(arms) do
    local p = arm .. ':'
    if st.g then
      redis.call('HSET', KEYS[2], p .. 'w', fmt(st.w), p .. 'm', fmt(st.m), p .. 'q', fmt(st.q),
                 p .. 'n', fmt(st.n), p .. 't', fmt(now))
    else
      redis.call('HSET', KEYS[2], p .. 's', fmt(st.s), p .. 'f', fmt(st.f),
                 p .. 'n', fmt(st.n), p .. 't', fmt(now))
    end
    changed = true
  end
  if changed then
    redis.call('HINCRBY', KEYS[2], 'rev', 1)
    notify()
  end
end
"""

# The decision log (``bandit.serving.decision_log``): appends one entry of records to the
# experiment's stream and trims it to its retention. Expects `prefix` (`<prefix>:{<id>}:`).
# The stream `log` holds entries {n = records, d or r = their lines}; the list `log:index`
# holds `<entry id>|<n>` per entry, oldest first, so that trimming never reads the records; the
# hash `log:stats` holds `records` (kept now), `trimmed`, `dropped` (by process buffers) and
# the retention `max_age_ms` / `max_records` the last flush was given, which reward scripts
# trim with too.
_LOG = r"""
local function log_trim(now_ms)
  local stats, index = prefix .. 'log:stats', prefix .. 'log:index'
  local limits = redis.call('HMGET', stats, 'max_age_ms', 'max_records', 'records')
  local max_age, max_records = tonumber(limits[1]), tonumber(limits[2])
  if not max_age then return end
  local total, removed, keep = tonumber(limits[3]) or 0, 0, nil
  local cutoff = now_ms - max_age
  -- The newest entry stays, whatever its size: one large flush never empties the log.
  local entries = redis.call('LLEN', index)
  while entries > 1 do
    local head = redis.call('LINDEX', index, 0)
    local ms, seq, count = string.match(head, '^(%d+)-(%d+)|(%d+)$')
    if tonumber(ms) < cutoff or total - removed > max_records then
      redis.call('LPOP', index)
      removed = removed + tonumber(count)
      entries = entries - 1
    else
      keep = ms .. '-' .. seq
      break
    end
  end
  if removed > 0 then
    if not keep then
      local ms, seq = string.match(redis.call('LINDEX', index, 0), '^(%d+)-(%d+)|')
      keep = ms .. '-' .. seq
    end
    redis.call('XTRIM', prefix .. 'log', 'MINID', keep)
    redis.call('HINCRBY', stats, 'records', -removed)
    redis.call('HINCRBY', stats, 'trimmed', removed)
  end
  -- An experiment no longer written to: its whole log is older than the age limit once this
  -- long has passed without a write, so the keys expire then.
  for _, key in ipairs({prefix .. 'log', index, stats}) do
    redis.call('PEXPIRE', key, math.floor(max_age) + 1000)
  end
end

local function log_append(kind, lines, count, now_ms)
  local id = redis.call('XADD', prefix .. 'log', '*', 'n', count, kind, lines)
  redis.call('RPUSH', prefix .. 'log:index', id .. '|' .. count)
  redis.call('HINCRBY', prefix .. 'log:stats', 'records', count)
  log_trim(now_ms)
end
"""

# Parses ARGV[3]'s events and works out each one's status (dedup, decision checks), writing
# nothing yet; expects ARGV[1] prefix, ARGV[2] window (see APPLY_EVENTS).
_DEDUP_CHECK = r"""
-- Apply a batch of reward events to one experiment, idempotently.
-- KEYS[1] meta, KEYS[2] stats.
-- ARGV[1] the experiment's key prefix (`<prefix>:{<id>}:`), ARGV[2] dedup window in ms,
--   ARGV[3] the events, one per line: event id, arm index (`<arm>|<metric>|<kind initial>`
--   for a guardrail metric's reward), reward, event time ('-' = now),
--   decision id ('-' = none), separated by tabs (ids never contain white space).
--   ARGV[4] '1': append the applied events to the decision log (`_LOG_REWARDS`), '0': not.
-- Dedup: event ids go into sets of a quarter window each (`dedup:<width>:<n>`), and an id is a
--   duplicate if any of the last five sets holds it, so an id is remembered for at least the
--   window and at most 1.25 windows. Two set commands per batch instead of one SET per event.
--   A decision ('d'/'s' ids; signed, so at most a window old) is rewarded once per arm: the
--   member `@<decision>:<arm>` joins the same sets. Provisional decisions ('p') convert once
--   through their pending key instead.
-- Dedup, bucket and pending-decision keys are built here from ARGV[1] rather than passed as
--   KEYS: they carry the experiment's hash tag, so they are in this script's slot on a Redis
--   Cluster, and three arguments instead of thousands keep the client cheap.
-- Returns {1, statuses}: one character per event: '1' applied, '0' duplicate (event id seen
--   within the window, or the decision already converted), '2' decision unknown or past its
--   attribution window, '3' arm differs from the decision's arm, '4' another event already
--   rewarded this decision and arm within the window. {-1}/{-2}: experiment missing/archived.
local prefix, window = ARGV[1], tonumber(ARGV[2])
local ids, arms_of, rewards, times, decisions, rewarded = {}, {}, {}, {}, {}, {}
local reward_texts, decision_texts = {}, {}  -- as sent, for the decision log
local n = 0
for id, arm, reward, ts, decision in string.gmatch(ARGV[3],
    '([^\t\n]+)\t([^\t\n]+)\t([^\t\n]+)\t([^\t\n]+)\t([^\t\n]+)\n') do
  n = n + 1
  ids[n], arms_of[n], rewards[n] = id, arm, tonumber(reward)
  reward_texts[n], decision_texts[n] = reward, decision
  times[n] = tonumber(ts)
  if string.sub(decision, 1, 1) == 'p' then
    decisions[n] = decision
  elseif decision ~= '-' then
    rewarded[n] = '@' .. decision .. ':' .. arm
  end
end

local statuses, served_at, candidates, positions, seen, claimed = {}, {}, {}, {}, {}, {}
local members, member_of, member_found, member_claimed = {}, {}, {}, {}
local first_of, copies = {}, {}  -- an id's first position in the batch; later copies of it
for i = 1, n do
  local status = 1
  local decision = decisions[i]
  if decision then
    local pending = redis.call('GET', prefix .. 'dec:' .. decision)
    if not pending then
      status = 2
    elseif pending == 'c' then
      status = 0
    else
      local sep = string.find(pending, '|', 1, true)
      if string.sub(pending, 1, sep - 1) ~= arms_of[i] then
        status = 3
      elseif claimed[decision] then
        status = 0  -- converted by an earlier event of this batch
      else
        claimed[decision] = true
        served_at[i] = tonumber(string.sub(pending, sep + 1))
      end
    end
  end
  if status == 1 then
    if seen[ids[i]] then
      copies[#copies + 1] = i  -- the same id twice in one batch: answered as its first copy
    else
      seen[ids[i]] = true
      first_of[ids[i]] = i
      candidates[#candidates + 1] = ids[i]
      positions[#candidates] = i
      if rewarded[i] then
        members[#members + 1] = rewarded[i]
        member_of[#members] = i
      end
    end
  end
  statuses[i] = status
end

local width = math.max(1, math.floor(window / 4))
local current = math.floor(now * 1000 / width)
local base = prefix .. 'dedup:' .. width .. ':'
local chunk = 4000  -- stays under Lua's limit on unpacked arguments
if #candidates > 0 then
  for bucket = current - 4, current do
    for first = 1, #candidates, chunk do
      local last = math.min(first + chunk - 1, #candidates)
      local found = redis.call('SMISMEMBER', base .. bucket, unpack(candidates, first, last))
      for k = 1, #found do
        if found[k] == 1 then statuses[positions[first + k - 1]] = 0 end
      end
    end
    for first = 1, #members, chunk do
      local last = math.min(first + chunk - 1, #members)
      local found = redis.call('SMISMEMBER', base .. bucket, unpack(members, first, last))
      for k = 1, #found do
        if found[k] == 1 then member_found[first + k - 1] = true end
      end
    end
  end
  -- Only now, with every resent id known as a duplicate: a decision and arm already rewarded
  -- (in Redis, or by an earlier event of this batch) refuses a new event id.
  for k = 1, #members do
    local i = member_of[k]
    if statuses[i] == 1 then
      if member_found[k] or member_claimed[members[k]] then
        statuses[i] = 4
      else
        member_claimed[members[k]] = true
      end
    end
  end
  -- A later copy of an id is a duplicate of its first copy when that one counts, and refused
  -- as it was otherwise.
  for k = 1, #copies do
    local i = copies[k]
    local original = statuses[first_of[ids[i]]]
    statuses[i] = original == 1 and 0 or original
  end
end
"""

# Records the applied events' ids (and decision markers) in the current dedup set.
_DEDUP_RECORD = r"""
if #candidates > 0 then
  local fresh = {}
  for k = 1, #candidates do
    if statuses[positions[k]] == 1 then fresh[#fresh + 1] = candidates[k] end
  end
  for k = 1, #members do
    if statuses[member_of[k]] == 1 then fresh[#fresh + 1] = members[k] end
  end
  for first = 1, #fresh, chunk do
    redis.call('SADD', base .. current, unpack(fresh, first, math.min(first + chunk - 1, #fresh)))
  end
  if #fresh > 0 then
    redis.call('PEXPIREAT', base .. current, (current + 5) * width + 1000)
  end
end

"""

# Appends the applied events to the decision log when ARGV[4] is '1': one line each, the
# event's time in ms (its `ts`, else now), decision id ('-' = none), arm index, reward, event
# id, and the time it was applied (ms, the server's clock), tab-separated.
_LOG_REWARDS = _LOG + r"""
if ARGV[4] == '1' then
  local lines, count = {}, 0
  local applied = string.format('%.0f', math.floor(now * 1000))
  for i = 1, n do
    if statuses[i] == 1 then
      count = count + 1
      lines[count] = string.format('%.0f', math.floor((times[i] or now) * 1000)) .. '\t' ..
        decision_texts[i] .. '\t' .. arms_of[i] .. '\t' .. reward_texts[i] .. '\t' .. ids[i] ..
        '\t' .. applied .. '\n'
    end
  end
  if count > 0 then log_append('r', table.concat(lines), count, math.floor(now * 1000)) end
end
"""

APPLY_EVENTS = _ARM_STATE + _DEDUP_CHECK + _DEDUP_RECORD + _LOG_REWARDS + r"""
for i = 1, n do
  if statuses[i] == 1 then
    local st = load(arms_of[i])
    local reward = rewards[i]
    if served_at[i] then
      -- The decision already counts as a failure: move its (decayed) weight to success.
      redis.call('SET', prefix .. 'dec:' .. decisions[i], 'c', 'KEEPTTL')
      local w = weight_since(served_at[i]) * reward
      st.s, st.f = st.s + w, math.max(0, st.f - w)
    else
      local w = weight_since(times[i] or now)
      if st.g then
        local total = st.w + w
        if total > 0 then
          local delta = reward - st.m
          st.m = st.m + w * delta / total
          st.q = st.q + w * delta * (reward - st.m)
          st.w = total
        end
      else
        st.s, st.f = st.s + w * reward, st.f + w * (1 - reward)
      end
      st.n = st.n + 1
    end
  end
end
save()
return {1, table.concat(statuses)}
"""

APPLY_CONTEXTUAL = _ARM_STATE + _DEDUP_CHECK + r"""
-- Reward events of a contextual experiment: the same checks and dedup as APPLY_EVENTS, but
-- the arm statistics are rows of sums (`i:x`: weight, sum r, sum r^2, X^T y, upper triangle of
-- X^T X; see bandit.policy.contextual), stored as little-endian doubles (`struct`'s '<d').
-- ARGV[4] the decision log flag (as APPLY_EVENTS).
-- ARGV[5] '*', or the events the caller's sums cover: one character per event, '1' included.
-- ARGV[6] the caller's clock when it weighted the events (forgetting: an event's weight is
--   2^((ts - ARGV[6]) / h), ts <= ARGV[6]; here the sums are decayed from ARGV[6] to now).
-- With a mask, ARGV[7..] are triples of arm index, summed row (doubles), events counted: one
--   row added per arm instead of d^2 arithmetic per event. When the statuses found here
--   differ from the mask (an event turned out to be a duplicate, say), nothing is written and
--   {3, statuses} asks the caller to send the events one by one.
-- With '*', ARGV[7] holds `weight, x1, ..., xd` (doubles) per event and ARGV[8] is d; the rows
--   of the events applicable now are summed here: slower, but it always applies (no retry
--   can be lost to a concurrent writer).
-- Returns {1, statuses} as APPLY_EVENTS, {3, statuses}, or {-1}/{-2}.
local function doubles(count) return '<' .. string.rep('d', count) end
local function unpack_row(bytes)
  local row = {struct.unpack(doubles(#bytes / 8), bytes)}
  row[#row] = nil  -- struct.unpack also returns the next position
  return row
end
local mode = ARGV[5]
local sums, order = {}, {}
if mode == '*' then
  local d = tonumber(ARGV[8])
  local format = doubles(d + 1)
  for i = 1, n do
    if statuses[i] == 1 then
      local x = {struct.unpack(format, ARGV[7], (i - 1) * (d + 1) * 8 + 1)}
      local w, r = x[1], rewards[i]
      local arm = arms_of[i]
      local s = sums[arm]
      if not s then
        s = {row = {}, count = 0}
        for k = 1, 3 + d + d * (d + 1) / 2 do s.row[k] = 0 end
        sums[arm] = s
        order[#order + 1] = arm
      end
      local row = s.row
      row[1], row[2], row[3] = row[1] + w, row[2] + w * r, row[3] + w * r * r
      local position = 4 + d
      for p = 1, d do
        local wx = w * x[p + 1]
        row[3 + p] = row[3 + p] + wx * r
        for q = p, d do
          row[position] = row[position] + wx * x[q + 1]
          position = position + 1
        end
      end
      s.count = s.count + 1
    end
  end
else
  for i = 1, n do
    if (statuses[i] == 1) ~= (string.sub(mode, i, i) == '1') then
      return {3, table.concat(statuses)}
    end
  end
  for a = 7, #ARGV, 3 do
    sums[ARGV[a]] = {row = unpack_row(ARGV[a + 1]), count = tonumber(ARGV[a + 2])}
    order[#order + 1] = ARGV[a]
  end
end
""" + _DEDUP_RECORD + _LOG_REWARDS + r"""
local skew = now - tonumber(ARGV[6])
local factor = 1
if half_life ~= nil and skew > 0 then factor = 2 ^ (-skew / half_life) end
for _, arm in ipairs(order) do
  local p = arm .. ':'
  local stored = redis.call('HMGET', KEYS[2], p .. 'x', p .. 'n', p .. 't')
  local decay = 1
  if stored[3] then decay = weight_since(tonumber(stored[3])) end
  local old = {}
  if stored[1] then old = unpack_row(stored[1]) end
  local out = {}
  for k, v in ipairs(sums[arm].row) do out[k] = (old[k] or 0) * decay + v * factor end
  redis.call('HSET', KEYS[2], p .. 'x', struct.pack(doubles(#out), unpack(out)),
             p .. 'n', fmt((tonumber(stored[2]) or 0) + sums[arm].count), p .. 't', fmt(now))
end
if #order > 0 then
  redis.call('HINCRBY', KEYS[2], 'rev', 1)
  notify()
end
return {1, table.concat(statuses)}
"""

RECORD_PROVISIONAL = _ARM_STATE + r"""
-- Count served decisions as provisional failures, to be converted by a later reward event.
-- KEYS[1] meta, KEYS[2] stats, KEYS[2+i] pending-decision key of decision i.
-- ARGV[1] attribution window in ms, ARGV[1+i] arm index of decision i.
-- Returns {1}, or {-1}/{-2} when the experiment is missing/archived.
for i = 3, #KEYS do
  local arm = ARGV[i - 1]
  redis.call('SET', KEYS[i], arm .. '|' .. fmt(now), 'PX', ARGV[1])
  local st = load(arm)
  st.f, st.n = st.f + 1, st.n + 1
end
save()
return {1}
"""

CREATE = _NOTIFY + r"""
-- Create an experiment unless its id is taken, and open its audit log.
-- KEYS[1] meta, KEYS[2] stats, KEYS[3] audit. ARGV[1] config JSON, ARGV[2] reward type,
--   ARGV[3] half-life in seconds ('' = no forgetting), ARGV[4] the audit entry (JSON).
-- Returns 1 when created, 0 when an experiment (live or archived) has this id.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'config', ARGV[1], 'version', '1', 'reward', ARGV[2],
           'half_life', ARGV[3], 'archived', '0')
redis.call('HSET', KEYS[2], 'rev', '1')
redis.call('RPUSH', KEYS[3], ARGV[4])
notify()
return 1
"""

UPDATE = _NOTIFY + r"""
-- Replace an experiment's configuration if nobody changed it since `expected version`.
-- The audit entry is appended in the same atomic step: no change without its record, and no
-- record of a change that was refused.
-- KEYS[1] meta, KEYS[2] stats, KEYS[3] audit. ARGV[1] expected version, ARGV[2] new config
--   JSON (carrying version + 1), ARGV[3] half-life ('' = none), ARGV[4] archived flag ('0' or
--   '1'), ARGV[5] the audit entry (JSON).
-- Returns {1, new version}, {0, current version} when stale, {-1} when missing.
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return {-1} end
if version ~= ARGV[1] then return {0, tonumber(version)} end
local new = tonumber(version) + 1
redis.call('HSET', KEYS[1], 'config', ARGV[2], 'version', tostring(new), 'half_life', ARGV[3],
           'archived', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'rev', 1)
redis.call('RPUSH', KEYS[3], ARGV[5])
notify()
return {1, new}
"""

SET_HELD = _NOTIFY + r"""
-- Record which arms the guardrails' hard gate holds, as computed from stats revision ARGV[1],
-- with its audit entry. KEYS[1] meta, KEYS[2] stats, KEYS[3] audit. ARGV[2] the held arm
-- indices ('1,4', '' for none), ARGV[3] the audit entry (JSON). Every process computes the same
-- gate from the same revision: the first to record it does; a computation from an older
-- revision, or one already recorded, changes nothing.
-- Returns 1 when recorded, 0 otherwise.
if not redis.call('HGET', KEYS[1], 'config') then return 0 end
if redis.call('HGET', KEYS[2], 'rev') ~= ARGV[1] then return 0 end
if (redis.call('HGET', KEYS[2], 'held') or '') == ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'held', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'rev', 1)
redis.call('RPUSH', KEYS[3], ARGV[3])
notify()
return 1
"""

READ = r"""
-- A consistent snapshot of one experiment.
-- KEYS[1] meta, KEYS[2] stats.
-- Returns {config JSON, stats as a flat field/value list, server time}, or {} when the
--   experiment does not exist.
local config = redis.call('HGET', KEYS[1], 'config')
if not config then return {} end
local clock = redis.call('TIME')
return {config, redis.call('HGETALL', KEYS[2]),
        clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))}
"""

STICKY = r"""
-- The assignment of a unit: the stored one, or the proposed one, stored now.
-- KEYS[1] units hash. ARGV[1] unit field, ARGV[2] proposed assignment.
-- Returns {the assignment in force, 1 when it is the proposal stored now else 0}: only the
--   process whose proposal was stored counts the unit's draw (the sample-ratio test).
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then return {current, 0} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {ARGV[2], 1}
"""

ADD_DRAWS = r"""
-- Add one process's fresh draws to an experiment's sample-ratio sums, all in one step, so a
-- reader never sees a draw without its propensities (their differences over any stretch of
-- history must pair up).
-- KEYS[1] draws hash. ARGV: field, increment, field, increment, ... (fields `<arm>:o`,
--   `<arm>:e`, `<arm>:v`; increments as decimal strings).
-- Returns 1.
for i = 1, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""

HISTORY_APPEND = r"""
-- Append a history sample to the coarse list unless one was taken there less than an interval
-- ago, and likewise to the fine list (any process may try; one sample per interval lands in
-- each), keeping at most `max` samples in each.
-- KEYS[1] coarse history list, KEYS[2] meta, KEYS[3] fine history list. ARGV[1] coarse interval
--   in seconds, ARGV[2] coarse max samples, ARGV[3] the sample (JSON object without its
--   time), ARGV[4] fine interval in seconds, ARGV[5] fine max samples (0: no fine list).
-- Entries are `<server time>|<sample JSON>`. Returns 2 when the sample landed in the coarse
--   list, 1 when only in the fine one, 0 when too soon for both, -1 when the experiment is
--   missing or archived.
local archived = redis.call('HGET', KEYS[2], 'archived')
if not archived or archived == '1' then return -1 end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local entry = string.format('%.6f', now) .. '|' .. ARGV[3]

local function append(key, interval, max)
  local last = redis.call('LINDEX', key, -1)
  if last then
    local at = tonumber(string.sub(last, 1, string.find(last, '|', 1, true) - 1))
    if now - at < interval * 0.95 then return false end
  end
  redis.call('RPUSH', key, entry)
  redis.call('LTRIM', key, -max, -1)
  return true
end

local fine = tonumber(ARGV[5]) > 0 and append(KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
if append(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])) then return 2 end
if fine then return 1 end
return 0
"""

FLUSH_LOG = "local prefix = ARGV[1]\n" + _LOG + r"""
-- One process's buffered decision records of one experiment (``bandit.serving.decision_log``).
-- KEYS[1] meta. ARGV[1] the experiment's key prefix, ARGV[2] max age in ms, ARGV[3] max
--   records, ARGV[4] records the process dropped since its last flush, ARGV[5] the records'
--   lines, ARGV[6] how many. Returns 1, or 0 when the experiment no longer exists (the
--   records are dropped with it).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('HSET', prefix .. 'log:stats', 'max_age_ms', ARGV[2], 'max_records', ARGV[3])
if ARGV[4] ~= '0' then redis.call('HINCRBY', prefix .. 'log:stats', 'dropped', ARGV[4]) end
if ARGV[6] ~= '0' then log_append('d', ARGV[5], ARGV[6], now_ms) else log_trim(now_ms) end
return 1
"""

SAVE_LAYER = r"""
-- Create or change a layer, with its audit entry, if nobody changed it since `expected
-- version`, keeping every experiment in at most one layer. Every layer key carries the hash tag
-- {layers} (one slot: the owners hash is checked and written in the same atomic step).
-- KEYS[1] the layer hash, KEYS[2] owners (experiment -> layer), KEYS[3] the layer's members
--   (set), KEYS[4] its audit list, KEYS[5] the index of layer ids (zset), KEYS[6] the
--   layers' change counter (polled by processes whose change feed is down), KEYS[7] salts
--   (salt -> the layer that hashes with it).
-- ARGV[1] expected version ('0': create), ARGV[2] config JSON (carrying the new version),
--   ARGV[3] the audit entry, ARGV[4] the layer id, ARGV[5] the changes channel,
-- ARGV[6] the layer's salt (its own forever: two layers of one salt would put every unit in
--   the same bucket of both), ARGV[7..] the experiments it holds now.
-- Returns {1, version}; {0, current version} when it exists (create) or is stale; {-1} when
--   missing; {-2, experiment, its layer} when an experiment is in another layer; {-3, the
--   layer} when another layer has the salt.
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '0' then
  if current then return {0, tonumber(current)} end
  local salted = redis.call('HGET', KEYS[7], ARGV[6])
  if salted and salted ~= ARGV[4] then return {-3, salted} end
elseif not current then
  return {-1}
elseif current ~= ARGV[1] then
  return {0, tonumber(current)}
end
for i = 7, #ARGV do
  local owner = redis.call('HGET', KEYS[2], ARGV[i])
  if owner and owner ~= ARGV[4] then return {-2, ARGV[i], owner} end
end
local now = {}
for i = 7, #ARGV do now[ARGV[i]] = true end
for _, experiment in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if not now[experiment] then redis.call('HDEL', KEYS[2], experiment) end
end
redis.call('DEL', KEYS[3])
for i = 7, #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[4])
  redis.call('SADD', KEYS[3], ARGV[i])
end
local version = tonumber(ARGV[1]) + 1
redis.call('HSET', KEYS[1], 'config', ARGV[2], 'version', tostring(version))
redis.call('RPUSH', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[5], 0, ARGV[4])
redis.call('HSET', KEYS[7], ARGV[6], ARGV[4])
redis.call('INCR', KEYS[6])
redis.call('PUBLISH', ARGV[5], '@layers')
return {1, version}
"""
