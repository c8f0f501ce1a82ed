-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6] owner, [7] claim seconds, [8..] users. Returns how many claims
-- were still this owner's.
local lease, n = now + tonumber(ARGV[7]), 0
for i = 8, #ARGV do
  local user = ARGV[i]
  if redis.call('HGET', P..'u:'..user, 'o') == ARGV[6] then
    redis.call('ZADD', W, lease, user); redis.call('ZADD', C, lease, user)
    n = n + 1
  end
end
return n
