-- Copyright (c) 2026 dovewarden authors, see the included COPYING file
--
-- ARGV[6] user, [7] owner, [8] result, [9] new state, [10] error,
-- [11] retry min, [12] retry max, [13] jitter 0..1, [14] repaired,
-- [15] CHANGED retry seconds, [16] CHANGED count for a full sync,
-- [17] the server the sync ran from, [18] repairs in a row after which
-- no settle follows, [19] '1' when the sync ran no dsync, [20] the
-- longest CHANGED retry.
-- Returns 1, or 0 when the claim was lost. The result is recorded (dq, dr
-- in the user hash; <prefix>gone:<user> for nouser) before it is
-- published, for done.lua to confirm.
local user, res = ARGV[6], ARGV[8]
local no_dsync = ARGV[19] == '1'
local uk = P..'u:'..user
local h, o = load(uk, FQ)
if h.o ~= ARGV[7] then return 0 end
local seq = num(h.seq)
if res == 'nouser' then
  setp(user, h, 0)
  redis.call('DEL', uk); redis.call('SREM', U, user)
  redis.call('SET', P..'gone:'..user, seq, 'EX', 3600)
  redis.call('SREM', FL, user)
  for _, z in ipairs({W, R, C, PD}) do redis.call('ZREM', z, user) end
else
  if res == 'ok' then
    if ARGV[9] ~= '' then
      redis.call('HSET', uk, 'st:'..ARGV[17], ARGV[9])
    end
    h.lss = ARGV[17]
    h.ls = num(h.lf); h.c = 0; h.f = 0; h.e = ''; h.nt = 0
    redis.call('SREM', FL, user)
    if num(h.sfull) == 1 then
      h.v = num(h.lfull)
      -- also with a change during the sync, as the built-in queue
      local repaired = ARGV[14] == '1'
      if repaired then h.r = num(h.lfull) end
      if repaired and sdelay > 0 and num(h.rr) < tonumber(ARGV[18]) then
        h.rr = num(h.rr) + 1; h.sf = now; h.sl = now
      elseif num(h.ch) == 0 then
        if not repaired then h.rr = 0 end
        h.sf = 0; h.sl = 0
      elseif num(h.sf) ~= 0 then
        h.sf = math.max(num(h.sf), num(h.lfull))
        if num(h.sl) < h.sf then h.sl = h.sf end
      end
    end
    if num(h.ps) > 0 then redis.call('ZADD', PD, h.ps, user)
    else redis.call('ZREM', PD, user) end
    -- the settle window of the client change this sync carried counts
    -- from its end, as the built-in queue's import does
    if h.lcs and h.lcs ~= '' and h.lcs == h.sos then h.lct = now end
  elseif res == 'release' then
    restore(user, h, no_dsync)
  elseif res == 'changed' then
    -- a change notified during the sync: retried soon; else doubled for
    -- each CHANGED past the full sync's, at most the longest CHANGED
    -- retry or retry max, whichever is shorter
    local busy = num(h.p) > 0
    restore(user, h, no_dsync)
    h.c = num(h.c) + 1
    local secs = tonumber(ARGV[15])
    local mx = math.max(math.min(tonumber(ARGV[12]), tonumber(ARGV[20])),
                        secs)
    if not busy then
      for i = tonumber(ARGV[16]) + 1, h.c do
        if secs >= mx then break end
        secs = secs * 2
      end
    end
    h.nt = now + math.min(secs, mx)
    if h.c >= tonumber(ARGV[16]) then h.ff = 1 end
  else
    restore(user, h, no_dsync)
    h.f = num(h.f) + 1; h.e = ARGV[10]; h.c = 0
    redis.call('SADD', FL, user)
    local mn, mx = tonumber(ARGV[11]), tonumber(ARGV[12])
    local secs = mx
    if res ~= 'config' then
      secs = mn
      for i = 2, h.f do
        if secs >= mx then break end
        secs = secs * 2
      end
      if secs > mx then secs = mx end
    end
    h.nt = now + secs + math.floor(secs / 4 * tonumber(ARGV[13]))
  end
  unclaim(user, h)
  place(user, h)
  save(uk, h, o)
  redis.call('HSET', uk, 'dq', seq, 'dr', res)
end
redis.call('PUBLISH', P..'done', res..' '..seq..' '..user)
return 1
