-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6] owner, [7] claim seconds, [8] the lowest pending priority
-- that may be claimed (0 = background work too), [9] the server the sync
-- runs from.
-- Returns {1, user, state, full, settle, priority, seq, failures, error,
-- stale, expired} or {0, seconds until the next user is due or -1 (unknown,
-- or only users for other servers' instances are ready), expired}, where
-- expired is the number of expired claims given back.
local owner, lease = ARGV[6], now + tonumber(ARGV[7])
local expired = 0
local due = redis.call('ZRANGEBYSCORE', W, '-inf', now, 'LIMIT', 0, 100)
for _, user in ipairs(due) do
  local uk = P..'u:'..user
  local h, o = load(uk, FQ)
  if not h.seq then
    redis.call('ZREM', W, user)
  elseif owned(h) then
    restore(user, h)
    h.e = 'Claim of '..h.o..' expired'
    expired = expired + 1
    unclaim(user, h)
    place(user, h)
    save(uk, h, o)
  else
    redis.call('ZREM', W, user); redis.call('ZADD', R, num(h.qk), user)
  end
end
local r = redis.call('ZRANGE', R, 0, 99)
if #r == 0 then
  local w = redis.call('ZRANGE', W, 0, 0, 'WITHSCORES')
  if #w == 0 then return {0, -1, expired} end
  return {0, math.max(0, tonumber(w[2]) - now), expired}
end
-- An incremental sync carries only the changes of the side it runs from:
-- the first of the ready users that this server may sync. A user changed
-- on another server waits for that server's instance, unless its sync is
-- full anyway or it waited longer than a claim lasts (that instance is
-- down or busy: a full sync from here carries both sides' changes).
local user, uk, h, o, full, settle
for _, u in ipairs(r) do
  uk = P..'u:'..u
  h, o = load(uk, F)
  if not h.seq then
    redis.call('ZREM', R, u)
  else
    local sd = settle_due(h)
    settle = sd ~= 0 and sd <= now
    full = num(h.ff) == 1 or settle or
      (interval > 0 and (num(h.lfull) == 0 or full_due(h) <= now))
    local origin = h.os or ''
    if full or origin == '' or origin == ARGV[9] then user = u; break end
    if origin == SEVERAL or (num(h.ps) > 0 and
                         num(h.ps) + tonumber(ARGV[7]) < now) then
      full = true; user = u; break
    end
  end
end
if not user then return {0, -1, expired} end
if num(h.p) < tonumber(ARGV[8]) then return {0, -1, expired} end
redis.call('ZREM', R, user)
h.ff = 0; h.lf = now
if full then h.lfull = now; h.slot = 0 end
h.sp = num(h.p); h.sk = num(h.k); h.sps = num(h.ps)
h.sos = h.os or ''; h.os = ''
setp(user, h, 0); h.k = 0; h.ps = 0; h.ch = 0
h.sfull = full and 1 or 0; h.sset = settle and 1 or 0
h.seq = num(h.seq) + 1; h.o = owner
redis.call('ZADD', W, lease, user); redis.call('ZADD', C, lease, user)
save(uk, h, o)
local st = redis.call('HGET', uk, 'st:'..ARGV[9])
-- stale: this server's state is not known to be newer than every sync
-- of the user (another server's, a failed one, or one of an instance
-- that does not record it); an incremental sync with it may miss this
-- server's changes to what such a sync brought, and a second one
-- carries them
local stale = (st and st ~= '' and h.lss ~= ARGV[9]) and 1 or 0
return {1, user, st or '', h.sfull, h.sset, h.sp, h.seq, num(h.f),
        h.e or '', stale, expired}
