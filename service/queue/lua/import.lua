-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6] user, [7] priority, [8] sort key, [9] pending since,
-- [10] last update, [11] state, [12] last sync, [13] last full sync,
-- [14] last successful sync, [15] failures, [16] last error,
-- [17] not before, [18] force full sync, [19] settle first change,
-- [20] settle last change, [21] last verified, [22] last repaired,
-- [23] full sync slot, [24] the server the state is of. Returns 1, or 0
-- when the user was known: then only its state from that server is added,
-- if Redis has none (each server of a pair imports its own states).
local user = ARGV[6]
local uk = P..'u:'..user
if redis.call('SADD', U, user) == 0 then
  if ARGV[11] ~= '' then redis.call('HSETNX', uk, 'st:'..ARGV[24], ARGV[11]) end
  return 0
end
local h = {p = 0, seq = 0, o = ''}
local names = {'k','ps','u','st','lf','lfull','ls','f','e','nt','ff','sf',
  'sl','v','r','slot'}
for i, n in ipairs(names) do h[n] = ARGV[7 + i] end
setp(user, h, tonumber(ARGV[7]))
-- the built-in queue's changes were all notified to this server
if h.p > 0 then h.os = ARGV[24] end
if num(h.ps) > 0 then redis.call('ZADD', PD, num(h.ps), user) end
if num(h.f) > 0 then redis.call('SADD', FL, user) end
place(user, h)
save(uk, h, {})
if h.st ~= '' then redis.call('HSET', uk, 'st:'..ARGV[24], h.st) end
return 1
