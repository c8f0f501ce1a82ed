-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6] user. Returns 1 when the user was known.
local user = ARGV[6]
local h = load(P..'u:'..user, {'p'})
setp(user, h, 0)
for _, z in ipairs({W, R, C, PD}) do redis.call('ZREM', z, user) end
redis.call('SREM', FL, user)
redis.call('DEL', P..'u:'..user)
return redis.call('SREM', U, user)
