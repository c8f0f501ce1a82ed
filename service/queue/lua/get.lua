-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6..] users. Returns per user {} when unknown, else
-- {p, lf, lfull, ls, v, r, f, e, nt, qk, o, ready}
local out = {}
for i = 6, #ARGV do
  local user = ARGV[i]
  local uk = P..'u:'..user
  local h = load(uk, FQ)
  if not h.seq then out[#out + 1] = {}
  else
    local due = redis.call('ZSCORE', W, user)
    if not due and redis.call('ZSCORE', R, user) then due = now end
    if owned(h) then due = -1 end
    out[#out + 1] = {num(h.p), num(h.lf), num(h.lfull), num(h.ls),
      num(h.v), num(h.r), num(h.f), h.e or '', tonumber(due or 0),
      h.o or '', now}
  end
end
return out
