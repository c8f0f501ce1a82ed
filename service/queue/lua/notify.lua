-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6] user, [7] priority, [8] its boost, [9] slot of a new user,
-- [10] force a full sync, [11] the server the change was made on ("" =
-- none: any server's instance may sync it), [12] how the change counts
-- for the settle: 'c' a client change from a plugin that reports
-- dsync's changes (settled only when another server's client changed the
-- user at about the same time: within the settle delay, or while that
-- change is pending or being synced), 'i' a change dsync made (never
-- settled), '' any other (always settled). Returns the user's claim
-- sequence.
local user, prio = ARGV[6], tonumber(ARGV[7])
local uk = P..'u:'..user
local h, o = load(uk, FN)
local srv, mode = ARGV[11], ARGV[12]
if redis.call('SADD', U, user) == 1 then
  h.slot = tonumber(ARGV[9]); h.seq = 0
end
if prio > 0 then
  local key = now - tonumber(ARGV[8])
  if num(h.ps) == 0 then
    h.ps = now; redis.call('ZADD', PD, 'NX', now, user)
  end
  if num(h.p) == 0 or key < num(h.k) then h.k = key end
  local settle = mode == ''
  if mode == 'c' and sdelay > 0 then
    local os, sos = h.os or '', h.sos or ''
    settle = (os ~= '' and os ~= srv) or
      (owned(h) and sos ~= '' and sos ~= srv) or
      (h.lcs and h.lcs ~= '' and h.lcs ~= srv and
       now - num(h.lct) <= sdelay)
    h.lcs = srv; h.lct = now
  end
  h.os = origin_merge(h.os, srv)
  if prio > num(h.p) then setp(user, h, prio); h.u = now end
  if settle and sdelay > 0 then
    if num(h.sf) == 0 then h.sf = now end
    h.sl = now; h.rr = 0
    if owned(h) then h.ch = 1 end
  end
end
if ARGV[10] == '1' then h.ff = 1; h.nt = 0 end
if not owned(h) then place(user, h) end
save(uk, h, o)
return num(h.seq)
