//! What authenticating a request needs to know about its user *now* — role, whether active,
//! since when its credentials are valid — in a small per-process cache, so that a
//! deactivation, a role change or a password change is enforced on every request without a
//! database query per request.
//!
//! An entry lives at most [`ACCOUNT_TTL`]; the `user.updated` event drops it at once (on the
//! instance that made the change before its answer goes out, on the others when their
//! listener delivers the event), so the TTL only bounds staleness if an event is ever late.
//! Concurrent misses for one user share one query. At most [`ACCOUNT_CAPACITY`] users are
//! kept (least recently used evicted). When the database cannot be reached, an expired
//! entry is used as it is until it answers again (an invalidated one never is): a blip of
//! the database does not log everyone out of their sockets' reconnects.
//!
//! Reason to change: how fresh account state must be. Must never decide what the state
//! means (auth does) or reach the database itself (the caller passes the load).

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use services::AccountState;
use tokio::sync::OnceCell;

use crate::error::ApiError;

/// The longest an account state is used without asking the database again.
pub const ACCOUNT_TTL: Duration = Duration::from_secs(2);
/// Users whose state is kept.
pub const ACCOUNT_CAPACITY: usize = 10_000;

/// The cache (see the module documentation).
pub struct AccountCache {
    entries: Mutex<LruCache<i64, Slot>>,
    ttl: Duration,
}

/// One user's state, loaded once by whichever request asked first.
#[derive(Clone)]
struct Slot {
    state: Arc<OnceCell<Option<AccountState>>>,
    born: Instant,
    /// The value of the expired slot this one replaces, for when the database is down.
    expired: Option<Option<AccountState>>,
}

impl Default for AccountCache {
    fn default() -> Self {
        Self::new(ACCOUNT_TTL, ACCOUNT_CAPACITY)
    }
}

impl AccountCache {
    /// A cache keeping up to `capacity` users for `ttl` each.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self { entries: Mutex::new(LruCache::new(capacity)), ttl }
    }

    /// The state of `user_id` (`None`: no such user), from the cache or from `load`.
    pub async fn get<F, Fut>(&self, user_id: i64, load: F) -> Result<Option<AccountState>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<AccountState>, ApiError>>,
    {
        let slot = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.get(&user_id) {
                Some(slot) if slot.born.elapsed() < self.ttl => slot.clone(),
                old => {
                    let expired = old.and_then(|o| o.state.get().cloned().or_else(|| o.expired.clone()));
                    let slot = Slot { state: Arc::new(OnceCell::new()), born: Instant::now(), expired };
                    entries.put(user_id, slot.clone());
                    slot
                }
            }
        };
        match slot.state.get_or_try_init(load).await {
            Ok(state) => Ok(state.clone()),
            Err(error) if error.code() == "unavailable" => slot.expired.clone().ok_or(error),
            Err(error) => Err(error),
        }
    }

    /// Forgets `user_id`: its next request reads the database.
    pub fn invalidate(&self, user_id: i64) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).pop(&user_id);
    }

    /// Forgets everyone (e.g. after user events may have been missed).
    pub fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Users kept now.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no user is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain_events::model::Role;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn state(active: bool) -> Option<AccountState> {
        Some(AccountState { username: "ana".into(), role: Role::Staff, active, tokens_valid_after_ms: 0 })
    }

    #[tokio::test]
    async fn hits_skip_the_load_until_invalidated_or_expired() {
        let cache = AccountCache::new(Duration::from_millis(200), 10);
        let loads = AtomicUsize::new(0);
        let load = |active| {
            loads.fetch_add(1, Ordering::SeqCst);
            async move { Ok(state(active)) }
        };
        assert_eq!(cache.get(1, || load(true)).await.expect("ok"), state(true));
        assert_eq!(cache.get(1, || load(false)).await.expect("ok"), state(true), "cached");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        cache.invalidate(1);
        assert_eq!(cache.get(1, || load(false)).await.expect("ok"), state(false), "reloaded at once");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(cache.get(1, || load(true)).await.expect("ok"), state(true), "expired");
        assert_eq!(loads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load_and_failures_are_not_kept() {
        let cache = Arc::new(AccountCache::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(7, || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(state(true))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("joins").expect("ok"), state(true));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        let failed = cache.get(8, || async { Err(ApiError::unavailable("down")) }).await;
        assert!(failed.is_err());
        assert_eq!(cache.get(8, || async { Ok(None) }).await.expect("retried"), None);
    }

    #[tokio::test]
    async fn an_expired_entry_stands_in_while_the_database_is_down_but_an_invalidated_one_does_not() {
        let cache = AccountCache::new(Duration::from_millis(50), 10);
        cache.get(1, || async { Ok(state(true)) }).await.expect("ok");
        tokio::time::sleep(Duration::from_millis(60)).await;
        let down = || async { Err(ApiError::unavailable("down")) };
        assert_eq!(cache.get(1, down).await.expect("the expired value"), state(true));
        assert_eq!(cache.get(1, down).await.expect("still, on a second try"), state(true));
        cache.invalidate(1);
        assert!(cache.get(1, down).await.is_err(), "an invalidated entry is never used");
        // Other errors are not papered over.
        cache.get(2, || async { Ok(state(true)) }).await.expect("ok");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.get(2, || async { Err(ApiError::unauthorized("no")) }).await.is_err());
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let cache = AccountCache::new(ACCOUNT_TTL, 100);
        for id in 0..1_000 {
            cache.get(id, || async { Ok(state(true)) }).await.expect("ok");
        }
        assert_eq!(cache.len(), 100);
    }
}
