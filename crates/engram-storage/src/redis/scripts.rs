//! The Lua scripts of the backend, each on one key (so they run on a cluster too) and atomic
//! in one round trip: [`WRITE`] (compare-and-set) and [`TOUCH`]. Unconditional writes are
//! transactions of typed commands instead (see `RECORDS_PER_TRANSACTION` in the backend):
//! a script costs the server half as much again as the `HSET` it runs.
//!
//! They are loaded with `SCRIPT LOAD` once and run with `EVALSHA`; a `NOSCRIPT` reply (after a
//! restart, a failover or `SCRIPT FLUSH`) reloads the script and runs the command again, which
//! is safe because a `NOSCRIPT` command ran nothing.
//!
//! Both start with a `#!lua` shebang (Redis 7): a script with one is refused as a whole with
//! `OOM` when the server is above `maxmemory`, before it runs. Without it Redis runs the
//! script and only its writing commands are checked, so a write could delete the old hash and
//! then fail to write the new one (or, as measured on 7.4, write past `maxmemory`).

use std::sync::RwLock;

/// Writes a whole record if its version is as expected: refuses a key of another type, checks
/// the version, deletes the old hash (so fields absent from the new record do not survive),
/// writes every field and sets or clears the server-side expiry.
///
/// `KEYS[1]`: the record's key. `ARGV[1]`: `-` to write only when no live record exists, or
/// the decimal version the live record must have. `ARGV[2]`: now, ms
/// since the epoch (a record whose `__exp` is at or before it is not live). `ARGV[3]`: the
/// `PEXPIREAT` time, or empty for none (a time in the past deletes the key at once).
/// `ARGV[4..]`: field/value pairs. Replies `{1}` when written, `{0}` when the version check
/// found no live record, `{0, version}` when it found another version.
pub(crate) const WRITE: &str = r"#!lua
local key = KEYS[1]
local t = redis.call('TYPE', key)['ok']
if t ~= 'none' and t ~= 'hash' then
  return redis.error_reply('WRONGTYPE the key of this record holds a ' .. t .. ', not a hash')
end
local cur = false
if t == 'hash' then
  local exp = redis.call('HGET', key, '__exp')
  if not exp or exp == 'inf' or tonumber(exp) > tonumber(ARGV[2]) then
    cur = redis.call('HGET', key, '__ver') or ''
  end
end
local ok
if ARGV[1] == '-' then ok = not cur else ok = (cur == ARGV[1]) end
if not ok then
  if cur then return {0, cur} else return {0} end
end
redis.call('DEL', key)
redis.call('HSET', key, unpack(ARGV, 4))
if ARGV[3] ~= '' then redis.call('PEXPIREAT', key, ARGV[3]) end
return {1}
";

/// Counts an access and optionally moves the expiry, on a live record only.
///
/// `KEYS[1]`: the record's key. `ARGV[1]`: the access time (ms). `ARGV[2]`: now (ms), for
/// liveness. `ARGV[3]`: the new `__exp`, or empty to keep it. `ARGV[4]`: the new `PEXPIREAT`
/// time, or empty for none (with `ARGV[3]` set: `PERSIST`). Replies nil when there is no live
/// record (and creates nothing), else `{count, __exp}`.
pub(crate) const TOUCH: &str = r"#!lua
local key = KEYS[1]
if redis.call('TYPE', key)['ok'] ~= 'hash' then return false end
local exp = redis.call('HGET', key, '__exp')
if exp and exp ~= 'inf' and tonumber(exp) <= tonumber(ARGV[2]) then return false end
local n = redis.call('HINCRBY', key, '__acc_n', 1)
redis.call('HSET', key, '__acc_t', ARGV[1])
if ARGV[3] ~= '' then
  exp = ARGV[3]
  redis.call('HSET', key, '__exp', exp)
  if ARGV[4] ~= '' then
    redis.call('PEXPIREAT', key, ARGV[4])
  else
    redis.call('PERSIST', key)
  end
end
return {n, exp or 'inf'}
";

/// A script and its SHA1 once loaded.
#[derive(Debug)]
pub(crate) struct Script {
    /// Name used in messages.
    pub(crate) name: &'static str,
    /// The Lua source.
    pub(crate) source: &'static str,
    sha: RwLock<Option<String>>,
}

impl Script {
    /// A script not loaded yet.
    pub(crate) const fn new(name: &'static str, source: &'static str) -> Self {
        Self { name, source, sha: RwLock::new(None) }
    }

    /// The SHA1 the server gave, if loaded.
    pub(crate) fn sha(&self) -> Option<String> {
        self.sha.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Records the SHA1 of a `SCRIPT LOAD`.
    pub(crate) fn set_sha(&self, sha: String) {
        *self.sha.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sha);
    }
}
