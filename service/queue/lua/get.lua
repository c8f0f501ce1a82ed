-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6..] users. Returns per user {} when unknown, else
-- {p (while claimed at least the claimed one), lf, lfull, ls, v, r, f, e,
-- due (-1 while claimed), o, now}
local out = {}
for i = 6, #ARGV do
  local user = ARGV[i]
  local uk = P..'u:'..user
  local h = load(uk, FQ)
  if not h.seq then out[#out + 1] = {}
  else
    local due = redis.call('ZSCORE', W, user)
    if not due and redis.call('ZSCORE', R, user) then due = now end
    -- a running sync still works for the priority it claimed
    local p = num(h.p)
    if owned(h) then due = -1; p = math.max(p, num(h.sp)) end
    out[#out + 1] = {p, num(h.lf), num(h.lfull), num(h.ls),
      num(h.v), num(h.r), num(h.f), h.e or '', tonumber(due or 0),
      h.o or '', now}
  end
end
return out
