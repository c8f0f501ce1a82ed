-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- The start of every script of the Redis queue (embed-lua.py puts it in
-- front of each; lines that are only a comment are left out).
-- ARGV[1] key prefix, [2] full sync interval, [3] settle delay,
-- [4] settle max, [5] the boost of LOW; a script's own arguments start at
-- ARGV[6].
--
-- The user hash fields:
--   p     pending priority (0 = none)       k    its sort key
--   ps    time of the oldest pending change u    when p was last raised
--   st:<server>  the dsync state of syncs run from that server (a
--         state holds the local server's modseqs: it is valid only
--         for syncs from the same side)       e    last error
--   lf, lfull, ls  last sync / full sync / successful sync start
--   nt    not before (back-off)             f    failures in a row
--   c     CHANGED results in a row          ff   force a full sync
--   sf, sl  settle: first and last change   v, r last verified / repaired
--   slot  scheduled first full sync (0 = last full sync + interval)
--   seq   claims so far                     o    claim owner ("" = none)
--   sp, sk, sps  priority, key and pending time the claim started with
--   sfull, sset  the claimed sync is full / the settle
--   ch    a change arrived during the claim qk   sort key once due
--   rr    full syncs in a row that repaired something
--   dq, dr  claim sequence and result of the last finished sync
--   os    where the pending changes were made: "" = nowhere in
--         particular (admin requests, full syncs: any server's instance
--         may sync it), the host name of the server whose instance was
--         notified, or SEVERAL (changes on more than one server). An
--         incremental sync sees only the changes of the side it runs
--         from, so a user is claimed from its origin's server, or with
--         a full sync.
--   sos   the origin the claim started with
--   lss   the server the last sync ran from if it succeeded, "-" if
--         it failed (the other servers' states are older than it)
--   lcs, lct  the server and time of the last client change reported by
--         a plugin that also reports dsync's changes (the settle rule:
--         such changes settle only when two servers changed the user
--         at about the same time)
local P = ARGV[1]
local interval = tonumber(ARGV[2])
local sdelay = tonumber(ARGV[3])
local smax = tonumber(ARGV[4])
local lowboost = tonumber(ARGV[5])
local now = tonumber(redis.call('TIME')[1])
local W, R, C = P..'wait', P..'ready', P..'claims'
local PD, FL, U = P..'pending', P..'failed', P..'users'
local F = {'p','k','ps','u','lf','lfull','ls','nt','f','c','e','ff','sf','sl','v','r','slot','seq','o','sp','sk','sps','sfull','sset','ch','qk','rr','os','sos','lcs','lct','lss'}
local FQ = {'p','k','ps','u','lf','lfull','ls','nt','f','c','e','ff','sf','sl','v','r','slot','seq','o','sp','sk','sps','sfull','sset','ch','qk','rr','os','sos','lcs','lct','lss'}
local FN = {'p','k','ps','u','lfull','nt','ff','sf','sl','slot','seq','o','ch','rr','os','sos','lcs','lct'}
local function num(v)
  if not v or v == '' then return 0 end
  return tonumber(v) or 0
end
local function load(uk, fields)
  local vals = redis.call('HMGET', uk, unpack(fields))
  local h, o = {}, {}
  for i, n in ipairs(fields) do h[n] = vals[i]; o[n] = vals[i] end
  return h, o
end
local function save(uk, h, o)
  local args = {}
  for _, n in ipairs(F) do
    local v = h[n]
    if v ~= nil and v ~= false and
       (o[n] == nil or o[n] == false or tostring(v) ~= o[n]) then
      args[#args + 1] = n; args[#args + 1] = v
    end
  end
  if #args > 0 then redis.call('HSET', uk, unpack(args)) end
end
local function setp(user, h, v)
  local old = num(h.p)
  if old == v then return end
  if old > 0 then redis.call('HINCRBY', P..'counts', old, -1) end
  if v > 0 then redis.call('HINCRBY', P..'counts', v, 1) end
  h.p = v
end
-- a host name has no control characters
local SEVERAL = '\t'
-- origin a merged with origin b ("" = none)
local function origin_merge(a, b)
  if not a or a == '' then return b end
  if b == '' or a == b then return a end
  return SEVERAL
end
local function owned(h) return h.o and h.o ~= '' end
local function settle_due(h)
  if sdelay == 0 or num(h.sf) == 0 then return 0 end
  return math.min(num(h.sl) + sdelay, num(h.sf) + smax)
end
local function full_due(h)
  local fd = num(h.slot)
  if fd == 0 then fd = num(h.lfull) + interval end
  return fd
end
local function place(user, h)
  if num(h.ff) == 1 and num(h.p) == 0 then
    setp(user, h, 1); h.k = now - lowboost; h.u = now
  end
  if num(h.p) > 0 then
    local nt = num(h.nt)
    if nt > now then
      redis.call('ZREM', R, user); redis.call('ZADD', W, nt, user)
      h.qk = num(h.k)
    else
      redis.call('ZREM', W, user); redis.call('ZADD', R, num(h.k), user)
    end
    return
  end
  local due = settle_due(h)
  if interval > 0 then
    local fd = full_due(h)
    if due == 0 or fd < due then due = fd end
  end
  if due == 0 then
    redis.call('ZREM', W, user); redis.call('ZREM', R, user)
  elseif due <= now then
    redis.call('ZREM', W, user); redis.call('ZADD', R, due, user)
  else
    redis.call('ZREM', R, user); redis.call('ZADD', W, due, user)
    h.qk = due
  end
end
-- A claim ended without success: its changes are pending again. Unless
-- it ran no dsync (no_dsync), its dsync may have changed both sides (and
-- may still run): no server's state is newer than it.
local function restore(user, h, no_dsync)
  if not no_dsync then h.lss = '-' end
  local sp, sk = num(h.sp), num(h.sk)
  if sp == 0 then sp = 1; sk = now - lowboost end
  local sps = num(h.sps)
  if sps ~= 0 and (num(h.ps) == 0 or sps < num(h.ps)) then h.ps = sps end
  if num(h.ps) == 0 then h.ps = now end
  redis.call('ZADD', PD, h.ps, user)
  if num(h.p) == 0 or sk < num(h.k) then h.k = sk end
  if sp > num(h.p) then setp(user, h, sp); h.u = now end
  if num(h.sfull) == 1 then h.ff = 1 end
  h.os = origin_merge(h.os, h.sos or '')
end
local function unclaim(user, h)
  h.o = ''; h.sp = 0; h.sk = 0; h.sps = 0; h.sfull = 0; h.sset = 0
  h.ch = 0; h.sos = ''
  redis.call('ZREM', C, user)
end
