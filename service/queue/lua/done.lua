-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6] user. Returns {claim sequence, result} of the user's last
-- finished sync as finish.lua recorded it, or {} when there is none. The
-- <prefix>done messages are only a hint to call this: anyone who may
-- PUBLISH could send one.
local user = ARGV[6]
local r = redis.call('HMGET', P..'u:'..user, 'dq', 'dr')
if r[1] and r[2] then return {tonumber(r[1]), r[2]} end
local g = redis.call('GET', P..'gone:'..user)
if g then return {tonumber(g), 'nouser'} end
return {}
