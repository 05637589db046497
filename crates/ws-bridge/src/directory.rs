//! Who is connected here: each connection's user, credential and mailbox, indexed by user
//! and by the conversations it follows — and what follows from that: presence, routing
//! personal events and typing, closing the connections of a changed user.
//!
//! Plain data with no locks, clock or I/O of its own (the hub holds it behind one lock and
//! passes the time in), so every rule here is tested directly.
//!
//! Architecture invariant: knows users, connections and mailboxes; nothing of sockets,
//! topics' values or other instances' transport.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use domain_events::model::{Actor, Task, UserUpdate};
use domain_events::{PresenceEntry, Typing};
use tokio::time::Instant;

use crate::mailbox::{MailKey, Mailbox, Put};
use crate::protocol::{Frame, close_code, server};

/// A `typing: true` not refreshed within this is relayed as `typing: false`.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(6);
/// Users whose latest change is remembered, so that a connection registered just after a
/// change it raced with is closed too.
pub const REMEMBERED_USER_CHANGES: usize = 4096;

/// A connection's number in the directory.
pub(crate) type ConnectionId = u64;

struct Connection {
    user: Actor,
    mailbox: Arc<Mailbox>,
    conversations: HashSet<i64>,
    /// When its credential (token, or the token behind its ticket) was issued, in
    /// milliseconds since the epoch.
    issued_at_ms: Option<i64>,
}

/// This instance's connections of one user, as presence shows them.
struct LocalUser {
    username: String,
    connections: u32,
    viewing: Option<String>,
}

/// The latest change seen for a user.
#[derive(Debug, Clone, Copy)]
struct UserChange {
    active: bool,
    valid_after_ms: i64,
    seen: Instant,
}

impl UserChange {
    /// The close code for a connection whose credential was issued at `issued_at_ms`
    /// (unknown: as if at the epoch), if the change ends it.
    fn closes(&self, issued_at_ms: Option<i64>) -> Option<u16> {
        if !self.active {
            Some(close_code::USER_DEACTIVATED)
        } else if issued_at_ms.unwrap_or(0) < self.valid_after_ms {
            Some(close_code::TOKEN_EXPIRED)
        } else {
            None
        }
    }
}

struct TypingState {
    username: String,
    until: Instant,
    /// The local connection it came from (not echoed back to it), if any.
    origin: Option<ConnectionId>,
}

/// A presence value to publish: built from the directory's change count `built`.
pub(crate) struct PresenceBuild {
    pub(crate) built: u64,
    /// This instance's users (what other instances are told).
    pub(crate) local: Vec<PresenceEntry>,
    /// This instance's and every other's, merged by user.
    pub(crate) frame: Frame,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Directory {
    next_id: ConnectionId,
    connections: HashMap<ConnectionId, Connection>,
    by_username: HashMap<String, HashSet<ConnectionId>>,
    by_conversation: HashMap<i64, HashSet<ConnectionId>>,
    users: HashMap<i64, LocalUser>,
    /// What other instances report (one entry per user and instance).
    remote: Vec<PresenceEntry>,
    /// Bumped by every change presence shows…
    presence_changes: u64,
    /// …and the count the last presence build reflects.
    presence_built: u64,
    user_changes: HashMap<i64, UserChange>,
    typing: HashMap<(i64, i64), TypingState>,
}

/// Counts of what routing did, for the hub's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub(crate) replaced: u64,
}

impl Delivered {
    fn count(&mut self, put: Put) {
        if put == Put::Replaced {
            self.replaced += 1;
        }
    }
}

impl Directory {
    /// Adds a connection; a change already seen for its user that ends it closes it at once.
    pub(crate) fn register(
        &mut self,
        user: &Actor,
        issued_at_ms: Option<i64>,
        mailbox: Arc<Mailbox>,
    ) -> ConnectionId {
        if let Some(code) = self.user_changes.get(&user.user_id).and_then(|c| c.closes(issued_at_ms)) {
            mailbox.close(code);
        }
        self.next_id += 1;
        let id = self.next_id;
        self.by_username.entry(user.username.clone()).or_default().insert(id);
        let local = self.users.entry(user.user_id).or_insert_with(|| LocalUser {
            username: user.username.clone(),
            connections: 0,
            viewing: None,
        });
        local.connections += 1;
        self.connections.insert(
            id,
            Connection { user: user.clone(), mailbox, conversations: HashSet::new(), issued_at_ms },
        );
        self.presence_changes += 1;
        id
    }

    /// Removes a connection.
    pub(crate) fn unregister(&mut self, id: ConnectionId) {
        let Some(gone) = self.connections.remove(&id) else { return };
        remove_from(&mut self.by_username, &gone.user.username, id);
        for conversation in &gone.conversations {
            remove_from(&mut self.by_conversation, conversation, id);
        }
        if let Some(user) = self.users.get_mut(&gone.user.user_id) {
            user.connections = user.connections.saturating_sub(1);
            if user.connections == 0 {
                self.users.remove(&gone.user.user_id);
            }
        }
        self.presence_changes += 1;
    }

    /// Records what a user looks at; whether presence changed.
    pub(crate) fn set_viewing(&mut self, user_id: i64, path: String) -> bool {
        match self.users.get_mut(&user_id) {
            Some(user) if user.viewing.as_deref() != Some(&path) => {
                user.viewing = Some(path);
                self.presence_changes += 1;
                true
            }
            _ => false,
        }
    }

    /// The conversations whose typing connection `id` receives.
    pub(crate) fn set_conversations(&mut self, id: ConnectionId, conversations: &HashSet<i64>) {
        let Some(conn) = self.connections.get_mut(&id) else { return };
        let old = std::mem::replace(&mut conn.conversations, conversations.clone());
        for gone in old.difference(conversations) {
            remove_from(&mut self.by_conversation, gone, id);
        }
        for new in conversations.difference(&old) {
            self.by_conversation.entry(*new).or_default().insert(id);
        }
    }

    /// `task:assigned` to every connection of the task's assignee here.
    pub(crate) fn task_assigned(&self, task: &Task) -> Delivered {
        let mut delivered = Delivered::default();
        let Some(ids) = task.assignee.as_deref().and_then(|a| self.by_username.get(a)) else {
            return delivered;
        };
        let frame = server::task_assigned(task);
        for conn in ids.iter().filter_map(|id| self.connections.get(id)) {
            delivered.count(conn.mailbox.put(MailKey::TaskAssigned(task.id), frame.clone()));
        }
        delivered
    }

    /// A user's account changed: closes their connections here that the change ends (4403
    /// deactivated, 4401 credential issued before the retirement) and remembers the change
    /// for connections registering just after. Returns how many were closed.
    pub(crate) fn user_updated(&mut self, update: &UserUpdate, now: Instant) -> usize {
        let change = UserChange {
            active: update.user.active,
            valid_after_ms: update.tokens_valid_after.timestamp_millis(),
            seen: now,
        };
        let user_id = update.user.id;
        if !self.user_changes.contains_key(&user_id)
            && self.user_changes.len() >= REMEMBERED_USER_CHANGES
            && let Some(oldest) = self.user_changes.iter().min_by_key(|(_, c)| c.seen).map(|(id, _)| *id)
        {
            self.user_changes.remove(&oldest);
        }
        self.user_changes.insert(user_id, change);
        let mut closed = 0;
        for conn in self.connections.values().filter(|c| c.user.user_id == user_id) {
            if let Some(code) = change.closes(conn.issued_at_ms) {
                conn.mailbox.close(code);
                closed += 1;
            }
        }
        closed
    }

    /// Someone (here, from connection `origin`, or on another instance) typed or stopped:
    /// relays it to the conversation's other followers when it changed anything (a refresh
    /// only extends the deadline).
    pub(crate) fn typing(
        &mut self,
        signal: &Typing,
        origin: Option<ConnectionId>,
        now: Instant,
    ) -> Delivered {
        let key = (signal.conversation_id, signal.user_id);
        let changed = if signal.typing {
            let state =
                TypingState { username: signal.username.clone(), until: now + TYPING_TIMEOUT, origin };
            self.typing.insert(key, state).is_none()
        } else {
            self.typing.remove(&key).is_some()
        };
        if changed { self.relay_typing(signal, origin) } else { Delivered::default() }
    }

    /// When the next `typing: true` runs out.
    pub(crate) fn next_typing_deadline(&self) -> Option<Instant> {
        self.typing.values().map(|t| t.until).min()
    }

    /// Relays `typing: false` for every `typing: true` not refreshed by `now`.
    pub(crate) fn expire_typing(&mut self, now: Instant) -> Delivered {
        let expired: Vec<(i64, i64)> =
            self.typing.iter().filter(|(_, s)| s.until <= now).map(|(k, _)| *k).collect();
        let mut delivered = Delivered::default();
        for key in expired {
            if let Some(state) = self.typing.remove(&key) {
                let signal = Typing {
                    conversation_id: key.0,
                    user_id: key.1,
                    username: state.username,
                    typing: false,
                };
                delivered.replaced += self.relay_typing(&signal, state.origin).replaced;
            }
        }
        delivered
    }

    fn relay_typing(&self, typing: &Typing, except: Option<ConnectionId>) -> Delivered {
        let mut delivered = Delivered::default();
        let Some(ids) = self.by_conversation.get(&typing.conversation_id) else { return delivered };
        let frame = server::typing(typing);
        let key = MailKey::Typing { conversation: typing.conversation_id, user: typing.user_id };
        for conn in ids.iter().filter(|id| Some(**id) != except).filter_map(|id| self.connections.get(id)) {
            delivered.count(conn.mailbox.put(key, frame.clone()));
        }
        delivered
    }

    /// What other instances report now; whether it changed.
    pub(crate) fn set_remote(&mut self, entries: Vec<PresenceEntry>) -> bool {
        if self.remote == entries {
            return false;
        }
        self.remote = entries;
        self.presence_changes += 1;
        true
    }

    /// Whether presence changed since it was last built.
    pub(crate) fn presence_stale(&self) -> bool {
        self.presence_built < self.presence_changes
    }

    /// Builds presence: this instance's users, and everyone's merged by user (connections
    /// summed, the last known view kept), sorted by username.
    pub(crate) fn build_presence(&mut self) -> PresenceBuild {
        self.presence_built = self.presence_changes;
        let local: Vec<PresenceEntry> = self
            .users
            .iter()
            .map(|(id, u)| PresenceEntry {
                user_id: *id,
                username: u.username.clone(),
                connections: u.connections,
                viewing: u.viewing.clone(),
            })
            .collect();
        let mut merged: HashMap<i64, PresenceEntry> = HashMap::new();
        for entry in self.remote.iter().chain(local.iter()) {
            merged
                .entry(entry.user_id)
                .and_modify(|m| {
                    m.connections += entry.connections;
                    if entry.viewing.is_some() {
                        m.viewing = entry.viewing.clone();
                    }
                })
                .or_insert_with(|| entry.clone());
        }
        let mut merged: Vec<PresenceEntry> = merged.into_values().collect();
        merged.sort_by(|a, b| a.username.cmp(&b.username).then(a.user_id.cmp(&b.user_id)));
        PresenceBuild { built: self.presence_built, local, frame: server::presence(&merged) }
    }
}

fn remove_from<K: std::hash::Hash + Eq + Clone>(
    index: &mut HashMap<K, HashSet<ConnectionId>>,
    key: &K,
    id: ConnectionId,
) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(&id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use domain_events::model::{Role, TaskStatus, User};
    use serde_json::Value;

    use super::*;
    use crate::mailbox::Closing;

    fn user(id: i64, name: &str) -> Actor {
        Actor { user_id: id, username: name.into(), role: Role::Staff }
    }

    fn parse(frame: &Frame) -> Value {
        serde_json::from_str(frame.as_str()).expect("json")
    }

    fn join(d: &mut Directory, who: &Actor, issued_at_ms: Option<i64>) -> (ConnectionId, Arc<Mailbox>) {
        let mailbox = Arc::new(Mailbox::default());
        (d.register(who, issued_at_ms, mailbox.clone()), mailbox)
    }

    fn online(d: &mut Directory) -> Value {
        parse(&d.build_presence().frame)["payload"]["online"].clone()
    }

    fn task(id: i64, assignee: &str) -> Task {
        let now = Utc::now();
        Task {
            id,
            kind: "k".into(),
            department: "d".into(),
            description: "x".into(),
            status: TaskStatus::InProgress,
            assignee: Some(assignee.into()),
            created_by: "bob".into(),
            created_at: now,
            updated_at: now,
            completed_at: None,
        }
    }

    fn update(id: i64, active: bool, valid_after_ms: i64) -> UserUpdate {
        UserUpdate {
            user: User { id, username: "ana".into(), role: Role::Staff, active, created_at: Utc::now() },
            tokens_valid_after: chrono::DateTime::from_timestamp_millis(valid_after_ms).expect("time"),
        }
    }

    #[test]
    fn presence_counts_connections_per_user_merges_other_instances_and_follows_viewing() {
        let mut d = Directory::default();
        let (ana1, _) = join(&mut d, &user(1, "ana"), None);
        join(&mut d, &user(1, "ana"), None);
        join(&mut d, &user(2, "bob"), None);
        assert!(d.set_viewing(1, "/tasks".into()));
        assert!(!d.set_viewing(1, "/tasks".into()), "the same view again is no change");
        assert!(d.set_remote(vec![PresenceEntry {
            user_id: 2,
            username: "bob".into(),
            connections: 3,
            viewing: None
        }]));
        assert!(d.presence_stale());
        assert_eq!(
            online(&mut d),
            serde_json::json!([
                {"userId": 1, "username": "ana", "connections": 2, "viewing": "/tasks"},
                {"userId": 2, "username": "bob", "connections": 4, "viewing": null},
            ])
        );
        assert!(!d.presence_stale());
        d.unregister(ana1);
        assert!(d.presence_stale());
        assert_eq!(online(&mut d)[0]["connections"], 1);
        assert_eq!(d.connections.len(), 2);
    }

    #[test]
    fn task_assigned_reaches_only_the_assignees_connections() {
        let mut d = Directory::default();
        let (_, ana) = join(&mut d, &user(1, "ana"), None);
        let (_, bob) = join(&mut d, &user(2, "bob"), None);
        assert_eq!(d.task_assigned(&task(9, "ana")), Delivered::default());
        assert_eq!(d.task_assigned(&task(9, "ana")), Delivered { replaced: 1 }, "the newer one replaces it");
        let frames = ana.take().expect("open");
        assert_eq!(frames.len(), 1);
        assert_eq!(parse(&frames[0])["type"], "task:assigned");
        assert_eq!(bob.take().expect("open"), vec![]);
    }

    #[test]
    fn a_user_change_closes_the_connections_it_ends_now_and_just_after() {
        let mut d = Directory::default();
        let now = Instant::now();
        let (_, old) = join(&mut d, &user(1, "ana"), Some(1_000));
        let (_, new) = join(&mut d, &user(1, "ana"), Some(3_000));
        let (_, other) = join(&mut d, &user(2, "bob"), Some(1_000));
        assert_eq!(d.user_updated(&update(1, true, 2_000), now), 1);
        assert_eq!(old.take(), Err(Closing::Code(close_code::TOKEN_EXPIRED)));
        assert_eq!(new.take(), Ok(vec![]), "issued after the retirement");
        assert_eq!(other.take(), Ok(vec![]));
        // A connection registering with an older credential just after is closed at once.
        let (_, late) = join(&mut d, &user(1, "ana"), Some(1_500));
        assert_eq!(late.take(), Err(Closing::Code(close_code::TOKEN_EXPIRED)));
        assert_eq!(d.user_updated(&update(1, false, 2_000), now), 3);
        assert_eq!(new.take(), Err(Closing::Code(close_code::USER_DEACTIVATED)));
    }

    #[test]
    fn remembered_user_changes_are_bounded() {
        let mut d = Directory::default();
        let start = Instant::now();
        for id in 0..(REMEMBERED_USER_CHANGES as i64 + 10) {
            d.user_updated(&update(id, false, 0), start + Duration::from_millis(id as u64));
        }
        assert_eq!(d.user_changes.len(), REMEMBERED_USER_CHANGES);
        assert!(!d.user_changes.contains_key(&0), "the oldest is forgotten first");
    }

    #[test]
    fn typing_is_relayed_to_the_other_followers_and_expires_after_six_seconds() {
        let mut d = Directory::default();
        let (ana_id, ana) = join(&mut d, &user(1, "ana"), None);
        let (bob_id, bob) = join(&mut d, &user(2, "bob"), None);
        let (_, carl) = join(&mut d, &user(3, "carl"), None);
        let conversation: HashSet<i64> = [7].into();
        d.set_conversations(ana_id, &conversation);
        d.set_conversations(bob_id, &conversation);
        let t0 = Instant::now();
        let typing = Typing { conversation_id: 7, user_id: 1, username: "ana".into(), typing: true };
        d.typing(&typing, Some(ana_id), t0);
        assert_eq!(
            parse(&bob.take().expect("open")[0]),
            serde_json::json!({"type":"typing","payload":{"conversationId":7,"userId":1,"username":"ana","typing":true}})
        );
        assert_eq!(ana.take(), Ok(vec![]), "not echoed to the typist");
        assert_eq!(carl.take(), Ok(vec![]), "not following");
        // A refresh sends nothing and extends the deadline.
        d.typing(&typing, Some(ana_id), t0 + Duration::from_secs(4));
        assert_eq!(bob.take(), Ok(vec![]));
        assert_eq!(d.next_typing_deadline(), Some(t0 + Duration::from_secs(10)));
        d.expire_typing(t0 + Duration::from_secs(9));
        assert_eq!(bob.take(), Ok(vec![]), "still typing at 9 s");
        d.expire_typing(t0 + Duration::from_secs(10));
        assert_eq!(parse(&bob.take().expect("open")[0])["payload"]["typing"], false);
        assert_eq!(d.next_typing_deadline(), None);
        // Unfollowing stops the relay.
        d.set_conversations(bob_id, &HashSet::new());
        d.typing(&typing, None, t0);
        assert_eq!(bob.take(), Ok(vec![]));
    }
}
