-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6] user ('' = every user whose last sync failed). Ends the
-- failure back-off: the users are due at once with their pending
-- changes (the replica answers again). Returns how many users were in
-- back-off.
local users, n = {ARGV[6]}, 0
if ARGV[6] == '' then users = redis.call('SMEMBERS', FL) end
for _, user in ipairs(users) do
  local uk = P..'u:'..user
  local h, o = load(uk, FQ)
  if h.seq and not owned(h) and num(h.f) > 0 and num(h.nt) > now then
    h.nt = now
    place(user, h)
    save(uk, h, o)
    n = n + 1
  end
end
return n
