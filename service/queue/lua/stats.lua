-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- Returns {users, syncing, pending, failed, oldest, now,
-- users with pending changes at LOW, HIGH, SYNC}
local o = redis.call('ZRANGE', PD, 0, 0, 'WITHSCORES')
local oldest = 0
if #o > 0 then oldest = tonumber(o[2]) end
local cnt = redis.call('HMGET', P..'counts', 1, 2, 3)
return {redis.call('SCARD', U), redis.call('ZCARD', C),
        redis.call('ZCARD', PD), redis.call('SCARD', FL), oldest, now,
        num(cnt[1]), num(cnt[2]), num(cnt[3])}
