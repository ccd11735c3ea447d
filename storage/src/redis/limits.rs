//! The recipients' limits on Redis: one ZSET per window (member: the notification id, score: when
//! it was admitted), all of a recipient's windows under one hash tag (`{r:<tenant>:<recipient>}`),
//! so one script takes a slot in all of them or in none.

use std::sync::LazyLock;

use redis::{Script, Value};
use steps::limits::{self, Admission, Full, Window};
use steps::model::NotificationId;
use workflows::ports::{LimitWindows, RecipientKey, StoreError};

use super::{RedisStore, parse_i64};
use crate::keys;
use crate::queue::over_limit;

/// Takes a slot for a member in every window or in none, exactly as `steps::limits::admit`:
/// each window drops what has left it (an admission at exactly `now - window` has left); a window
/// that holds the member has room for it; if another window holds `max` already, nothing changes
/// and the reply lists each full window with when its oldest admission leaves. Otherwise the
/// member is admitted everywhere at `now` (a slot it held moves to `now`, never back) and each
/// key lives at least one window past it.
///
/// KEYS: the windows. ARGV: now ms, member, then (window ms, max) per key.
///
/// Returns `{1}` admitted, `{0, index, retry_at_ms, ...}` full (indexes from 0).
const ACQUIRE: &str = r"
local now, member = tonumber(ARGV[1]), ARGV[2]
local full = {0}
for i, key in ipairs(KEYS) do
  local window, max = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if not redis.call('ZSCORE', key, member) and redis.call('ZCARD', key) >= max then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    full[#full + 1] = i - 1
    full[#full + 1] = tonumber(oldest[2]) + window
  end
end
if #full > 1 then return full end
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[1 + 2 * i])
  local held = redis.call('ZSCORE', key, member)
  if not held or tonumber(held) < now then redis.call('ZADD', key, now, member) end
  if redis.call('PTTL', key) < window then redis.call('PEXPIRE', key, window) end
end
return {1}
";

static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE));

/// A score bound strictly above `now - window` (`(` makes it exclusive), which may be negative.
fn after(now_ms: u64, window_ms: u64) -> String {
    format!("({}", i128::from(now_ms) - i128::from(window_ms))
}

impl LimitWindows for RedisStore {
    async fn acquire_windows(
        &self,
        key: &RecipientKey,
        member: &NotificationId,
        windows: &[Window],
        now_ms: u64,
    ) -> Result<Admission, StoreError> {
        if windows.len() > limits::WINDOWS_MAX {
            return Err(over_limit("a window set", windows.len(), limits::WINDOWS_MAX));
        }
        if windows.is_empty() {
            return Ok(Admission::Admitted);
        }
        let mut invocation = ACQUIRE_SCRIPT.prepare_invoke();
        invocation.arg(now_ms).arg(member.as_str());
        for window in windows {
            invocation
                .key(keys::limit(&key.tenant, &key.recipient, &window.limit))
                .arg(window.limit.window_ms())
                .arg(window.limit.max());
        }
        let mut conn = self.conn.clone();
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error("acquire_windows", &e))?;
        let corrupt = || self.corrupt("acquire_windows");
        let Value::Array(items) = reply else { return Err(corrupt()) };
        let numbers: Vec<u64> = items
            .iter()
            .map(|v| parse_i64(v).and_then(|n| u64::try_from(n).ok()))
            .collect::<Option<_>>()
            .ok_or_else(corrupt)?;
        match numbers.split_first() {
            Some((1, [])) => Ok(Admission::Admitted),
            Some((0, rest)) if !rest.is_empty() && rest.len() % 2 == 0 => {
                let full = rest
                    .chunks(2)
                    .map(|pair| Full { index: pair[0] as usize, retry_at_ms: pair[1] })
                    .collect();
                Ok(Admission::Full { full })
            }
            _ => Err(corrupt()),
        }
    }

    async fn window_usage(
        &self,
        key: &RecipientKey,
        windows: &[Window],
        now_ms: u64,
    ) -> Result<Vec<u32>, StoreError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for window in windows {
            pipe.cmd("ZCOUNT")
                .arg(keys::limit(&key.tenant, &key.recipient, &window.limit))
                .arg(after(now_ms, window.limit.window_ms()))
                .arg("+inf");
        }
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await.map_err(|e| self.error("ZCOUNT", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_bound_is_exclusive_and_may_be_negative() {
        assert_eq!(after(10_000, 1_000), "(9000");
        assert_eq!(after(10, 1_000), "(-990");
    }
}
