-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6] this instance's identity followed by ':', [7] its owner string
-- (identity:life). Gives back the claims of the instance's earlier lives
-- (killed, or replaced by a reload) at once, instead of after their
-- expiry. Returns how many it gave back.
local id, me, n = ARGV[6], ARGV[7], 0
for _, user in ipairs(redis.call('ZRANGE', C, 0, -1)) do
  local uk = P..'u:'..user
  local h, o = load(uk, FQ)
  if not h.seq then
    redis.call('ZREM', C, user)
  elseif owned(h) and h.o ~= me and string.sub(h.o, 1, #id) == id then
    restore(user, h)
    unclaim(user, h)
    place(user, h)
    save(uk, h, o)
    n = n + 1
  end
end
return n
