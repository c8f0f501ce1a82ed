-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6] user, [7] priority, [8] its boost, [9] slot of a new user,
-- [10] force a full sync, [11] the server the change was made on ("" =
-- none: any server's instance may sync it). Returns the user's claim
-- sequence.
local user, prio = ARGV[6], tonumber(ARGV[7])
local uk = P..'u:'..user
local h, o = load(uk, FN)
if redis.call('SADD', U, user) == 1 then
  h.slot = tonumber(ARGV[9]); h.seq = 0
end
if prio > 0 then
  local key = now - tonumber(ARGV[8])
  if num(h.ps) == 0 then
    h.ps = now; redis.call('ZADD', PD, 'NX', now, user)
  end
  if num(h.p) == 0 or key < num(h.k) then h.k = key end
  h.os = origin_merge(h.os, ARGV[11])
  if prio > num(h.p) then setp(user, h, prio); h.u = now end
  if sdelay > 0 then
    if num(h.sf) == 0 then h.sf = now end
    h.sl = now; h.rr = 0
    if owned(h) then h.ch = 1 end
  end
end
if ARGV[10] == '1' then h.ff = 1; h.nt = 0 end
if not owned(h) then place(user, h) end
save(uk, h, o)
return num(h.seq)
