-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6] user ('' = every user whose last sync failed), ARGV[7] the
-- SSCAN cursor of the failed set ('0' to start). Ends the failure
-- back-off: the users are due at once with their pending changes (the
-- replica answers again). One call handles one batch of the failed set,
-- so that a long outage's many failed users don't block Redis in one
-- script. Returns {users that were in back-off, next cursor}: the
-- caller calls again until the cursor is '0'.
local users, n, cursor = {ARGV[6]}, 0, '0'
if ARGV[6] == '' then
  local r = redis.call('SSCAN', FL, ARGV[7], 'COUNT', 500)
  cursor, users = r[1], r[2]
end
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
return {n, cursor}
