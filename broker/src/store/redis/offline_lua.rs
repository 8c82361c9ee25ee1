//! The Lua side of [`super::RedisStore`]'s offline store: one script per operation, built from
//! shared helpers over the layout below, so every change is atomic on the server.
//!
//! A terminal's pending stream is its inbox (`P inbox:<t>`, messages addressed to it by name)
//! merged, in id order, with the broadcasts of its class (`P bc:0` for pushes to every kind,
//! `P bc:<kind + 1>` for one kind) above its **broadcast floor**: its score in
//! `P floors:<kind + 1>` (the terminals remembered at login, so also the recipients of a
//! kind-wide push), first the last id issued when it was remembered, raised by every
//! acknowledgement that covers a broadcast. Broadcasts a full inbox refused for it
//! (`reject-new`) are skip marks (`P skip:<t>`, counted in `P skipn`, listed per broadcast in
//! `P bcskip:<id>` for the purge). `P ibn:<kind + 1>` holds each terminal's inbox size (only
//! non-empty ones), so a broadcast finds the terminals that may be full without reading the
//! others. An acknowledgement of `n` covers every pending id at or below `n` (the same rule as
//! the since-id at login): it removes the inbox references at or below `n` and raises the
//! floor, so a broadcast costs one record, not one reference per terminal, and an ack no work
//! per broadcast.
//!
//! Ids go through Lua as strings: Lua prints numbers with 14 significant digits, ids reach 16
//! (comparisons go through `tonumber`, exact up to 2^53).

/// Shared Lua helpers (prepended to every offline script that needs them).
///
/// * `release(p, mid)`: drops one inbox reference to body `mid`, deleting it with the last.
/// * `kclass(t)`: the broadcast class of a packed terminal key (its kind plus one).
/// * `pending_count(p, t, floor)`: inbox size plus unskipped broadcasts above `floor` (`floor`
///   false: the terminal was never remembered, inbox only).
/// * `first_pending(p, t, floor)`: the terminal's oldest pending id, or false.
/// * `advance(p, t, through)`: the terminal acknowledged every id at or below `through` (capped
///   at the last id issued); returns how many pending deliveries that covered; writes nothing
///   when it covered nothing.
/// * `make_room(p, t, floor, cap, reject, out)`: applies the cap before one more delivery;
///   false when `reject-new` refuses it (counted in `out.rejected`), else evictions are counted
///   in `out.evicted`.
/// * `floor_of(p, t)`, `inbox_changed(p, t, delta)`, `remember(p, t)`: the floor (false: never
///   remembered), the inbox size index, and remembering a terminal.
/// * `make_room_for_kind(p, kind_class, cap, reject, out, refused)`: [`APPEND`]'s cap for a
///   broadcast, on the terminals of a kind that may be full only.
/// * `since_rows(...)`: the replay shared by [`SINCE`] and [`LOGIN`].
pub(super) const HELPERS: &str = r#"
local function release(p, mid)
  local mk = p .. 'msg:' .. mid
  if redis.call('EXISTS', mk) == 1 and redis.call('HINCRBY', mk, 'refs', -1) <= 0 then
    redis.call('DEL', mk)
    redis.call('ZREM', p .. 'exp', mid)
  end
end

local function kclass(t)
  return string.format('%d', math.floor(tonumber(t) / 4294967296) + 1)
end

local function floor_of(p, t)
  return redis.call('ZSCORE', p .. 'floors:' .. kclass(t), t)
end

local function inbox_changed(p, t, delta)
  local k = p .. 'ibn:' .. kclass(t)
  if tonumber(redis.call('ZINCRBY', k, delta, t)) <= 0 then redis.call('ZREM', k, t) end
end

local function bc_above(p, t, floor)
  local from = '(' .. floor
  return redis.call('ZCOUNT', p .. 'bc:0', from, '+inf')
    + redis.call('ZCOUNT', p .. 'bc:' .. kclass(t), from, '+inf')
end

local function pending_count(p, t, floor)
  local n = redis.call('ZCARD', p .. 'inbox:' .. t)
  if floor then
    n = n + bc_above(p, t, floor) - tonumber(redis.call('HGET', p .. 'skipn', t) or '0')
  end
  return n
end

local function first_bc(p, t, class, floor)
  local start = '(' .. floor
  local sk = p .. 'skip:' .. t
  while true do
    local ids = redis.call('ZRANGEBYSCORE', p .. 'bc:' .. class, start, '+inf', 'LIMIT', 0, 16)
    if #ids == 0 then return false end
    for _, id in ipairs(ids) do
      if not redis.call('ZSCORE', sk, id) then return id end
    end
    start = '(' .. ids[#ids]
  end
end

local function first_pending(p, t, floor)
  local best = false
  local first = redis.call('ZRANGE', p .. 'inbox:' .. t, 0, 0)
  if #first > 0 then best = first[1] end
  if floor then
    for _, class in ipairs({'0', kclass(t)}) do
      local b = first_bc(p, t, class, floor)
      if b and (not best or tonumber(b) < tonumber(best)) then best = b end
    end
  end
  return best
end

local function advance(p, t, through)
  local last = redis.call('GET', p .. 'msgid') or '0'
  if tonumber(through) > tonumber(last) then through = last end
  local covered = 0
  local ib = p .. 'inbox:' .. t
  local ids = redis.call('ZRANGEBYSCORE', ib, '-inf', through)
  if #ids > 0 then
    for _, mid in ipairs(ids) do release(p, mid) end
    redis.call('ZREMRANGEBYSCORE', ib, '-inf', through)
    redis.call('DECRBY', p .. 'refs', #ids)
    inbox_changed(p, t, -#ids)
    covered = #ids
  end
  local floor = floor_of(p, t)
  if floor and tonumber(through) > tonumber(floor) then
    local from = '(' .. floor
    local b = redis.call('ZCOUNT', p .. 'bc:0', from, through)
      + redis.call('ZCOUNT', p .. 'bc:' .. kclass(t), from, through)
    local sk = p .. 'skip:' .. t
    local marks = redis.call('ZRANGEBYSCORE', sk, '-inf', through)
    if #marks > 0 then
      for _, id in ipairs(marks) do redis.call('SREM', p .. 'bcskip:' .. id, t) end
      redis.call('ZREMRANGEBYSCORE', sk, '-inf', through)
      redis.call('HINCRBY', p .. 'skipn', t, -#marks)
    end
    if b > 0 or #marks > 0 then
      redis.call('ZADD', p .. 'floors:' .. kclass(t), 'XX', through, t)
    end
    covered = covered + math.max(b - #marks, 0)
  end
  return covered
end

local function make_room(p, t, floor, cap, reject, out)
  local n = pending_count(p, t, floor)
  if n < cap then return true end
  if reject then
    out.rejected = out.rejected + 1
    return false
  end
  while n >= cap do
    local oldest = first_pending(p, t, floor)
    if not oldest then break end
    local c = advance(p, t, oldest)
    if c == 0 then break end
    out.evicted = out.evicted + c
    n = n - c
    floor = floor_of(p, t)
  end
  return true
end

local function remember(p, t)
  redis.call('ZADD', p .. 'floors:' .. kclass(t), 'NX', redis.call('GET', p .. 'msgid') or '0', t)
end

local function merged_broadcasts(p, kc)
  local lists = {redis.call('ZRANGE', p .. 'bc:0', 0, -1), redis.call('ZRANGE', p .. 'bc:' .. kc, 0, -1)}
  local nums, strs = {}, {}
  local i, j = 1, 1
  local a, b = lists[1], lists[2]
  while i <= #a or j <= #b do
    local take
    if i > #a then take = b[j]; j = j + 1
    elseif j > #b then take = a[i]; i = i + 1
    elseif tonumber(a[i]) < tonumber(b[j]) then take = a[i]; i = i + 1
    else take = b[j]; j = j + 1 end
    nums[#nums + 1] = tonumber(take)
    strs[#strs + 1] = take
  end
  return nums, strs
end

local function first_above(nums, f)
  local lo, hi = 1, #nums + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if nums[mid] > f then hi = mid else lo = mid + 1 end
  end
  return lo
end

local function make_room_for_kind(p, kc, cap, reject, out, refused)
  local bcs = {p .. 'bc:0', p .. 'bc:' .. kc}
  local btotal = redis.call('ZCARD', bcs[1]) + redis.call('ZCARD', bcs[2])
  local seen = {}
  local fk = p .. 'floors:' .. kc
  local function slow(t)
    if seen[t] then return end
    seen[t] = true
    local f = floor_of(p, t)
    if f and not make_room(p, t, f, cap, reject, out) then refused[#refused + 1] = t end
  end
  local amin = cap - btotal
  if amin < 1 then amin = 1 end
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', p .. 'ibn:' .. kc, amin, '+inf')) do slow(t) end
  if btotal < cap then return end
  local nums, strs = merged_broadcasts(p, kc)
  local threshold = strs[#strs - cap + 1]
  local inboxed = {}
  for _, t in ipairs(redis.call('ZRANGE', p .. 'ibn:' .. kc, 0, -1)) do inboxed[t] = true end
  local skips = {}
  local sk = redis.call('HGETALL', p .. 'skipn')
  for i = 1, #sk, 2 do
    if tonumber(sk[i + 1]) > 0 then skips[sk[i]] = true end
  end
  local moves = {}
  local function flush()
    if #moves > 0 then
      redis.call('ZADD', fk, 'XX', unpack(moves))
      moves = {}
    end
  end
  local rows = redis.call('ZRANGEBYSCORE', fk, '-inf', '(' .. threshold, 'WITHSCORES')
  for i = 1, #rows, 2 do
    local t, f = rows[i], rows[i + 1]
    if seen[t] or inboxed[t] or skips[t] then
      slow(t)
    else
      -- Only broadcasts pending, at least `cap` of them: the floor passes the oldest ones.
      local at = first_above(nums, tonumber(f))
      local above = #nums - at + 1
      if above >= cap then
        if reject then
          out.rejected = out.rejected + 1
          refused[#refused + 1] = t
        else
          local k = above - cap + 1
          out.evicted = out.evicted + k
          moves[#moves + 1] = strs[at + k - 1]
          moves[#moves + 1] = t
          if #moves >= 1000 then flush() end
        end
      end
    end
  end
  flush()
end
local function since_rows(p, t, since, limit, now, batch, out)
  local ib = p .. 'inbox:' .. t
  local floor = floor_of(p, t)
  local srcs, starts = {ib}, {since}
  local skips = 0
  if floor then
    local from = floor
    if tonumber(since) > tonumber(floor) then from = since end
    srcs[2], srcs[3] = p .. 'bc:0', p .. 'bc:' .. kclass(t)
    starts[2], starts[3] = from, from
    skips = tonumber(redis.call('HGET', p .. 'skipn', t) or '0')
  end
  local count = 0
  while count < limit do
    local cand, cut = {}, false
    for i, key in ipairs(srcs) do
      local ids = redis.call('ZRANGEBYSCORE', key, '(' .. starts[i], '+inf', 'LIMIT', 0, batch)
      for _, id in ipairs(ids) do cand[#cand + 1] = {tonumber(id), id, i} end
      if #ids == batch then
        local l = tonumber(ids[#ids])
        if not cut or l < cut then cut = l end
      end
    end
    if #cand == 0 then break end
    table.sort(cand, function(a, b) return a[1] < b[1] end)
    for _, c in ipairs(cand) do
      if count >= limit or (cut and c[1] > cut) then break end
      starts[c[3]] = c[2]
      local skipped = c[3] > 1 and skips > 0 and redis.call('ZSCORE', p .. 'skip:' .. t, c[2])
      if not skipped then
        local m = redis.call('HMGET', p .. 'msg:' .. c[2], 'exp', 'from', 'payload')
        if not m[1] then
          if c[3] == 1 then
            redis.call('ZREM', ib, c[2])
            redis.call('DECR', p .. 'refs')
            inbox_changed(p, t, -1)
          end
        elseif tonumber(m[1]) > now then
          out[#out + 1] = c[2]
          out[#out + 1] = m[1]
          out[#out + 1] = m[2]
          out[#out + 1] = m[3]
          count = count + 1
        end
      end
    end
    if not cut then break end
  end
end
"#;

/// ARGV: prefix, known epoch, fresh epoch, cap, reject (0/1), max id, id floor, this broker's
/// high-water id, expires, from, payload, mode (`list`/`known`), comet stream length (0: no
/// delivery notices), kind-wide notice label, then terminal keys (list) or the broadcast class
/// and the kind classes it reaches (known). Returns {id, stored, evicted, rejected, epoch status,
/// epoch}; when the epoch status is `lost` or `behind` nothing is stored, the id counter is raised
/// to this broker's high-water id and the id returned is `0` (see `super::data_loss`). The
/// delivery notices for the comets go out in the same script (`notify_comets`,
/// [`super::comet_stream`]).
///
/// A broadcast visits only the terminals that may be full (`make_room_for_kind`): those whose
/// inbox alone is within the number of stored broadcasts of the cap (`P ibn:<class>`), and those
/// whose floor is below the cap-th newest broadcast. Every other known terminal of the kind
/// takes it without being read or written. A full terminal with only broadcasts pending (no
/// inbox, no skip marks) is handled in bulk: its floor passes its oldest broadcasts (one
/// `ZADD` per 500 terminals), or it is refused.
pub(super) const APPEND: &str = r#"
local p = ARGV[1]
local e = check_epoch(p, ARGV[2], ARGV[3])
local cap = tonumber(ARGV[4])
local reject = ARGV[5] == '1'
local cur = tonumber(redis.call('GET', p .. 'msgid') or '0')
if cur < tonumber(ARGV[8]) and e[1] ~= 'lost' then e[1] = 'behind' end
if e[1] == 'lost' or e[1] == 'behind' then
  if cur < tonumber(ARGV[8]) then redis.call('SET', p .. 'msgid', ARGV[8]) end
  return {'0', 0, 0, 0, e[1], e[2]}
end
if cur >= tonumber(ARGV[6]) then return redis.error_reply('IDS_EXHAUSTED') end
local nid = cur + 1
if tonumber(ARGV[7]) > nid then nid = tonumber(ARGV[7]) end
local id = string.format("%d", nid)
redis.call('SET', p .. 'msgid', id)
local out = {evicted = 0, rejected = 0}
local stored = 0
local targets = {}
local known = ARGV[12] == 'known'
if known then
  local class = ARGV[15]
  local refused = {}
  for i = 16, #ARGV do
    local kc = ARGV[i]
    local before = #refused
    make_room_for_kind(p, kc, cap, reject, out, refused)
    stored = stored + redis.call('ZCARD', p .. 'floors:' .. kc) - (#refused - before)
  end
  if stored > 0 then
    redis.call('HSET', p .. 'msg:' .. id, 'exp', ARGV[9], 'from', ARGV[10], 'payload', ARGV[11],
      'refs', 0, 'bc', class)
    redis.call('ZADD', p .. 'exp', ARGV[9], id)
    redis.call('ZADD', p .. 'bc:' .. class, id, id)
    for _, t in ipairs(refused) do
      redis.call('ZADD', p .. 'skip:' .. t, id, id)
      redis.call('HINCRBY', p .. 'skipn', t, 1)
      redis.call('SADD', p .. 'bcskip:' .. id, t)
    end
  end
else
  for i = 15, #ARGV do targets[#targets + 1] = ARGV[i] end
  for _, t in ipairs(targets) do
    if make_room(p, t, floor_of(p, t), cap, reject, out) then
      redis.call('ZADD', p .. 'inbox:' .. t, id, id)
      inbox_changed(p, t, 1)
      stored = stored + 1
    end
  end
  if stored > 0 then
    redis.call('INCRBY', p .. 'refs', stored)
    redis.call('HSET', p .. 'msg:' .. id, 'exp', ARGV[9], 'from', ARGV[10], 'payload', ARGV[11],
      'refs', stored)
    redis.call('ZADD', p .. 'exp', ARGV[9], id)
  end
end
notify_comets(p, id, ARGV[10], ARGV[11], ARGV[13], ARGV[14], targets, known)
return {id, stored, out.evicted, out.rejected, e[1], e[2]}
"#;

/// ARGV: prefix, known epoch, fresh epoch, terminal, since id, limit, now, batch. Returns
/// {epoch status, epoch} then flat {id, exp, from, payload}*.
pub(super) const SINCE: &str = r#"
local p = ARGV[1]
local e = check_epoch(p, ARGV[2], ARGV[3])
local out = {e[1], e[2]}
since_rows(p, ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), out)
return out
"#;

/// A login's store work in one script. ARGV: prefix, known epoch, fresh epoch, terminal, since
/// id, limit, now, batch. Remembers the terminal, acknowledges through the since id (when above
/// 0), then replays like [`SINCE`]; returns the same reply.
pub(super) const LOGIN: &str = r#"
local p = ARGV[1]
local e = check_epoch(p, ARGV[2], ARGV[3])
remember(p, ARGV[4])
if tonumber(ARGV[5]) > 0 then advance(p, ARGV[4], ARGV[5]) end
local out = {e[1], e[2]}
since_rows(p, ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), out)
return out
"#;

/// ARGV: prefix, known epoch, fresh epoch. Returns {epoch status, epoch}.
pub(super) const CHECK_MARKER: &str = r#"
return check_epoch(ARGV[1], ARGV[2], ARGV[3])
"#;

/// ARGV: prefix, known epoch, fresh epoch, packed terminal key. Returns {epoch status, epoch}.
pub(super) const REMEMBER: &str = r#"
local e = check_epoch(ARGV[1], ARGV[2], ARGV[3])
remember(ARGV[1], ARGV[4])
return e
"#;

/// ARGV: prefix, terminal, through id. Moves the terminal's cursor (see `advance`); returns how
/// many pending deliveries that covered.
pub(super) const ACK_THROUGH: &str = r#"
return advance(ARGV[1], ARGV[2], ARGV[3])
"#;

/// ARGV: prefix, now, batch. Deletes up to `batch` expired bodies (a broadcast also leaves its
/// class list and takes its skip marks along); returns how many.
pub(super) const PURGE: &str = r#"
local p = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, mid in ipairs(ids) do
  local mk = p .. 'msg:' .. mid
  local class = redis.call('HGET', mk, 'bc')
  if class then
    redis.call('ZREM', p .. 'bc:' .. class, mid)
    local bs = p .. 'bcskip:' .. mid
    for _, t in ipairs(redis.call('SMEMBERS', bs)) do
      redis.call('ZREM', p .. 'skip:' .. t, mid)
      redis.call('HINCRBY', p .. 'skipn', t, -1)
    end
    redis.call('DEL', bs)
  end
  redis.call('DEL', mk)
  redis.call('ZREM', p .. 'exp', mid)
end
return #ids
"#;

/// ARGV: prefix, then the broadcast classes of every kind (`kind + 1` each). Returns
/// {stored bodies, pending deliveries}: the inbox references plus, for every live broadcast,
/// the terminals of its class whose floor is below it, less those whose full inbox refused it.
/// The work is one count per live broadcast and class, not one per terminal.
pub(super) const STATS: &str = r#"
local p = ARGV[1]
local kinds = {}
for i = 2, #ARGV do kinds[#kinds + 1] = ARGV[i] end
local pending = tonumber(redis.call('GET', p .. 'refs') or '0')
local function below(class, id)
  return redis.call('ZCOUNT', p .. 'floors:' .. class, '-inf', '(' .. id)
end
for _, class in ipairs({'0', unpack(kinds)}) do
  for _, id in ipairs(redis.call('ZRANGE', p .. 'bc:' .. class, 0, -1)) do
    local n = 0
    if class == '0' then
      for _, k in ipairs(kinds) do n = n + below(k, id) end
    else
      n = below(class, id)
    end
    pending = pending + n - redis.call('SCARD', p .. 'bcskip:' .. id)
  end
end
return {redis.call('ZCARD', p .. 'exp'), pending}
"#;

/// ARGV: prefix. Returns flat {name, count}* ordered by name.
pub(super) const GROUP_LIST: &str = r#"
local p = ARGV[1]
local out = {}
for _, name in ipairs(redis.call('ZRANGE', p .. 'groups', 0, -1)) do
  out[#out + 1] = name
  out[#out + 1] = redis.call('ZCARD', p .. 'group:' .. name)
end
return out
"#;
