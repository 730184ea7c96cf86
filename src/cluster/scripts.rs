//! The cluster's Redis keys and Lua scripts. Each script runs atomically in Redis,
//! so "at most `limit` leases on a Worker across all instances" holds whatever the
//! instances do at once. Times are Redis's own clock (`TIME`), in ms.
//!
//! Keys (`andera-lb:cluster:` prefix):
//! - `queue:<contract>:<group>`: the pool's waiting tasks, a sorted set scored by
//!   priority whose members `<tag><arrival>|<instance>|<seq>` order each priority by
//!   the named clients' fair share, then arrival (`seq`, a counter shared by all
//!   instances), so the first member is the most urgent task anywhere;
//! - `fair:<contract>:<group>`: the fair share's virtual clocks (see [`SCHED`]);
//! - `leases:<worker url>`: that Worker's leases, `<instance>|<seq>` scored by expiry;
//! - `instances`: live instances scored by expiry (renewed with their leases);
//! - `inbox:<instance>`: grants to an instance's waiting tasks made by another
//!   instance (a list the holder reads with `BLPOP`: unlike pub/sub, a grant sent
//!   while the holder reconnects is not lost);
//! - `epoch`: set once per Redis data set; a changed value tells an instance that
//!   Redis lost its state (restarted empty), so it writes its leases again.

/// Prefix of every cluster key.
pub(crate) const PREFIX: &str = "andera-lb:cluster:";
/// Live instances.
pub(crate) const INSTANCES: &str = "andera-lb:cluster:instances";
/// The shared arrival counter.
pub(crate) const SEQ: &str = "andera-lb:cluster:seq";

/// The fair-share clocks of the pool (`group`, `contract`): per priority the tag
/// dispatched last (`c:<priority>`), per priority and client its latest tag
/// (`l:<priority>:<client>`).
pub(crate) fn fair_key(group: &str, contract: u64) -> String {
    format!("{PREFIX}fair:{contract}:{group}")
}
/// The data set's epoch.
pub(crate) const EPOCH: &str = "andera-lb:cluster:epoch";
/// Prefix of the inboxes.
pub(crate) const INBOX: &str = "andera-lb:cluster:inbox:";

/// The queue key of the pool (`group`, `contract`).
pub(crate) fn queue_key(group: &str, contract: u64) -> String {
    format!("{PREFIX}queue:{contract}:{group}")
}

/// The pool of a queue key, the inverse of [`queue_key`].
pub(crate) fn pool_of(queue: &str) -> Option<(String, u64)> {
    let rest = queue.strip_prefix(PREFIX)?.strip_prefix("queue:")?;
    let (contract, group) = rest.split_once(':')?;
    Some((group.to_string(), contract.parse().ok()?))
}

/// The lease key of the Worker at `url`.
pub(crate) fn lease_key(url: &str) -> String {
    format!("{PREFIX}leases:{url}")
}

/// Enqueue, release and hand over, in one step.
///
/// KEYS: queue, instances, seq, fair, then one lease key per candidate Worker.
/// ARGV: me, ttl ms, the caller's clock in µs (carried in grants, for the hand-off
/// latency), a lease to remove from the first lease key (`""`: none), a task to
/// enqueue (`<instance>|<seq>`, `""`: none), its priority, the inbox prefix, its
/// client (`""`: none) and that client's weight, an earlier queue entry of the same
/// task to replace (`""`: none), then (url, limit) of each candidate.
///
/// A queue entry is scored by priority; its member is `<tag><arrival>|<instance>|<seq>`
/// (fixed-width decimals, so members of one priority sort by them): `tag` is the
/// client's virtual finish tag (stride scheduling as in the scheduler's `fair`
/// module, the clocks in the `fair` hash shared by all instances), `arrival` the
/// shared counter, so within a priority clients take turns by weight, and one
/// client's tasks keep their arrival order, across instances.
///
/// Then, Worker by Worker, while it has fewer live leases than its limit and the
/// queue has a task of a live instance, the head task gets a lease (`<instance>|<seq>`):
/// the caller's own tasks are returned, the others' are pushed to their inbox.
///
/// Returns `{index of the candidate the enqueued task got (0: it waits), queue depth,
/// its queue entry, ms until the first lease of a full candidate lapses (-1: none
/// while tasks wait), member, url, member, url, ...}` (the caller's other tasks
/// granted).
pub(crate) const SCHED: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, ttl = ARGV[1], tonumber(ARGV[2])
local STRIDE = 1048576
-- Lua would print large numbers as %.14g (rounded): scores go as exact integers.
local exp = string.format('%.0f', now + ttl)
redis.call('ZADD', KEYS[2], exp, me)
local n = #KEYS - 4
if ARGV[4] ~= '' and n > 0 then
  redis.call('ZREM', KEYS[5], ARGV[4])
end
local entry = ''
if ARGV[5] ~= '' then
  if ARGV[10] ~= '' then
    redis.call('ZREM', KEYS[1], ARGV[10])
  end
  local prio = ARGV[6]
  local clock = tonumber(redis.call('HGET', KEYS[4], 'c:' .. prio) or '0')
  local lk = 'l:' .. prio .. ':' .. ARGV[8]
  local last = tonumber(redis.call('HGET', KEYS[4], lk) or '0')
  if last < clock then last = clock end
  local tag = last + math.max(1, math.floor(STRIDE / math.max(1, tonumber(ARGV[9]))))
  redis.call('HSET', KEYS[4], lk, string.format('%.0f', tag))
  -- Bounded whatever groups and priorities clients name: an idle pool's clocks go
  -- after an hour, and past 4096 fields they start over (a moment without turns).
  if redis.call('HLEN', KEYS[4]) > 4096 then
    redis.call('DEL', KEYS[4])
  end
  redis.call('PEXPIRE', KEYS[4], 3600000)
  local arrival = redis.call('INCR', KEYS[3])
  entry = string.format('%020.0f%015.0f|', tag, arrival) .. ARGV[5]
  redis.call('ZADD', KEYS[1], prio, entry)
end
local out = {0, 0, entry, -1}
for i = 1, n do
  local lk = KEYS[4 + i]
  local url = ARGV[9 + 2 * i]
  local limit = tonumber(ARGV[10 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', lk, '-inf', now)
  local free = limit - redis.call('ZCARD', lk)
  while free > 0 do
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    local head = first[1]
    if not head then break end
    redis.call('ZREM', KEYS[1], head)
    -- The band's clock moves to the tag of the task dispatched.
    local ck = 'c:' .. first[2]
    local tag = tonumber(string.sub(head, 1, 20))
    if tag and tag > tonumber(redis.call('HGET', KEYS[4], ck) or '0') then
      redis.call('HSET', KEYS[4], ck, string.format('%.0f', tag))
    end
    local lease = string.sub(head, 37)
    local inst = string.match(lease, '^(.*)|')
    local alive = inst and redis.call('ZSCORE', KEYS[2], inst)
    if alive and tonumber(alive) >= now then
      redis.call('ZADD', lk, exp, lease)
      free = free - 1
      if head == entry then
        out[1] = i
      elseif inst == me then
        table.insert(out, lease)
        table.insert(out, url)
      else
        local inbox = ARGV[7] .. inst
        redis.call('RPUSH', inbox, lease .. '\t' .. url .. '\t' .. KEYS[1] .. '\t' .. ARGV[3])
        redis.call('PEXPIRE', inbox, ttl)
      end
    end
  end
  -- Tasks still wait and this Worker is full: when its first lease lapses (a dead
  -- instance's, unless renewed), the caller looks again.
  if free <= 0 and redis.call('EXISTS', KEYS[1]) == 1 then
    local first = redis.call('ZRANGE', lk, 0, 0, 'WITHSCORES')
    if first[2] then
      local d = math.max(0, tonumber(first[2]) - now)
      if out[4] < 0 or d < out[4] then out[4] = d end
    end
  end
end
out[2] = redis.call('ZCARD', KEYS[1])
return out
"#;

/// Renews this instance and its leases.
///
/// KEYS: instances, epoch, one lease key per lease held, then the lease keys of
/// every Worker this instance knows. ARGV: me, ttl ms, the epoch this instance
/// last saw (`""`: none), a fresh epoch (used if Redis has none), `1` to write the
/// leases again (after a fallback), the number of leases held, then their members
/// (one per held lease key).
///
/// A lease is only extended (`XX`) unless Redis lost its state (the epoch changed)
/// or the caller asks: then the leases are written again from the instance's own
/// count, and its leases Redis has but the instance does not (granted by a call
/// whose answer was lost, returned by one that failed) are removed. Returns
/// `{epoch, 1 if the leases were written again}`.
pub(crate) const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, ttl = ARGV[1], tonumber(ARGV[2])
local e = redis.call('GET', KEYS[2])
if not e then
  e = ARGV[4]
  redis.call('SET', KEYS[2], e)
end
local rebuild = ARGV[5] == '1' or e ~= ARGV[3]
local held = tonumber(ARGV[6])
local exp = string.format('%.0f', now + ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], exp, me)
local mine = {}
for i = 1, held do
  local key, member = KEYS[2 + i], ARGV[6 + i]
  mine[key .. '\n' .. member] = true
  if rebuild then
    redis.call('ZADD', key, exp, member)
  else
    redis.call('ZADD', key, 'XX', exp, member)
  end
end
if rebuild then
  local prefix = me .. '|'
  for i = 3 + held, #KEYS do
    for _, member in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
      if string.sub(member, 1, #prefix) == prefix and not mine[KEYS[i] .. '\n' .. member] then
        redis.call('ZREM', KEYS[i], member)
      end
    end
  end
end
return {e, rebuild and 1 or 0}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_key_gives_its_pool_back() {
        let k = queue_key("gpu:a", 3);
        assert_eq!(k, "andera-lb:cluster:queue:3:gpu:a");
        assert_eq!(pool_of(&k), Some(("gpu:a".to_string(), 3)));
        assert_eq!(pool_of("andera-lb:cluster:leases:x"), None);
    }
}
