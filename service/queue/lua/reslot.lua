-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- At an instance's start, the users whose periodic full sync is overdue
-- (after a downtime) get their slot within the next interval, like the
-- built-in queue's restored users: all of them at once would go before
-- every new change. Only C computes slots
-- (dovewarden_queue_full_sync_slot()), so it takes two steps:
-- ARGV[6] 'list', [7] 'wait' or 'ready', [8] an offset into the part of
-- that set that is due now, [9] how many to look at. Returns {users
-- looked at, how many of the found ones leave that part once they have
-- their slot, the overdue users found...}.
-- ARGV[6] 'set', [7..] pairs of an overdue user and its slot. Returns
-- how many got their slot.
local function overdue(h)
  return h.seq and not owned(h) and interval > 0 and full_due(h) <= now
end
if ARGV[6] == 'list' then
  local ready = ARGV[7] == 'ready'
  local users = redis.call('ZRANGEBYSCORE', ready and R or W, '-inf', now,
    'LIMIT', tonumber(ARGV[8]), tonumber(ARGV[9]))
  local out = {#users, 0}
  for _, user in ipairs(users) do
    local h = load(P..'u:'..user, {'seq', 'o', 'p', 'slot', 'lfull'})
    if overdue(h) then
      out[#out + 1] = user
      -- a pending change keeps a ready user where it is
      if not ready or num(h.p) == 0 then out[2] = out[2] + 1 end
    end
  end
  return out
end
local n = 0
for i = 7, #ARGV - 1, 2 do
  local user = ARGV[i]
  local uk = P..'u:'..user
  local h, o = load(uk, FQ)
  if overdue(h) then
    h.slot = tonumber(ARGV[i + 1])
    place(user, h)
    save(uk, h, o)
    n = n + 1
  end
end
return n
