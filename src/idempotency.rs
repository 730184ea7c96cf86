//! `Idempotency-Key` (issue #23): a repeat of a task, with the same key and the
//! same body from the same client within `tasks.idempotency_ttl_ms`, starts
//! nothing new.
//!
//! - A webhook task's repeat gets the first one's answer (`200`, the same
//!   `x-andera-task-id`) for the whole TTL, whatever became of the task; the key is
//!   kept in the journal with the task, so a restart still knows it.
//! - A sync or stream task's repeat while the first is live (queued or running) is
//!   `409` `duplicate_in_progress`, naming the first task's id; once the first has
//!   ended the key is let go, and a repeat runs again: its result was not kept, so
//!   refusing would leave the client no way to get one.
//! - The same key with another body is `422`.
//!
//! Only SHA-256 digests are kept: of the client's name and the key (the key text is
//! never stored), and of the body. Memory is bounded by
//! `tasks.idempotency_max_keys` (oldest dropped first), about 224 bytes each (its map
//! entry: two digests, the task id, the expiry; and its place in the age queue).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The request header.
pub(crate) const HEADER: &str = "idempotency-key";

/// Longest key accepted, bytes (the IETF draft's keys are UUIDs; 255 is generous).
pub(crate) const MAX_KEY_BYTES: usize = 255;

/// Default `tasks.idempotency_ttl_ms`: one day.
pub(crate) const DEFAULT_TTL_MS: u64 = 86_400_000;

/// Default `tasks.idempotency_max_keys`.
pub(crate) const DEFAULT_MAX_KEYS: usize = 100_000;

/// A SHA-256 digest.
pub(crate) type Digest = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A task's idempotency key and body, as digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    /// SHA-256 of the client's name, a NUL and the key: keys are per client.
    pub key: Digest,
    /// SHA-256 of the body as the client sent it.
    pub body: Digest,
}

impl Request {
    /// The request's `Idempotency-Key` for `client`, if it sent one; a key that is
    /// empty, longer than [`MAX_KEY_BYTES`] or not visible ASCII is an error (`400`).
    pub(crate) fn of(
        headers: &http::HeaderMap,
        client: &str,
        body: &[u8],
    ) -> Result<Option<Request>, &'static str> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(None);
        };
        let key = value.as_bytes().trim_ascii();
        if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.iter().all(u8::is_ascii_graphic) {
            return Err("Idempotency-Key must be 1 to 255 visible ASCII characters");
        }
        Ok(Some(Request {
            key: sha256(&[client.as_bytes(), b"\0", key]),
            body: sha256(&[body]),
        }))
    }
}

/// What a key was found to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not seen: this task goes ahead and holds the key.
    New(Claim),
    /// A webhook task accepted under this key: answer as it was answered.
    Accepted(String),
    /// A task under this key is still being accepted or running: `409`.
    InProgress(String),
    /// The key was used with another body: `422`.
    Mismatch(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The first task is live (or its webhook answer not yet sent).
    Live,
    /// A webhook task was accepted: repeats get its answer until the key expires.
    Accepted,
}

struct Entry {
    body: Digest,
    task_id: Box<str>,
    phase: Phase,
    expires: Instant,
    serial: u64,
}

#[derive(Default)]
struct Inner {
    by_key: foldhash::HashMap<Digest, Entry>,
    /// Keys by age, oldest first, with the serial of the entry they were queued for
    /// (an entry let go and taken again is queued again).
    age: VecDeque<(Digest, u64)>,
    serial: u64,
}

impl Inner {
    fn remove_if(&mut self, key: &Digest, serial: u64) {
        if self.by_key.get(key).is_some_and(|e| e.serial == serial) {
            self.by_key.remove(key);
        }
    }

    /// Drops expired keys and, beyond `max`, the oldest; and the age queue's stale
    /// places when they outnumber the keys.
    fn trim(&mut self, now: Instant, max: usize) {
        while let Some(&(key, serial)) = self.age.front() {
            let stale = self.by_key.get(&key).is_none_or(|e| e.serial != serial);
            let drop = stale
                || self.by_key.len() >= max
                || self.by_key.get(&key).is_some_and(|e| e.expires <= now);
            if !drop {
                break;
            }
            self.age.pop_front();
            if !stale {
                self.by_key.remove(&key);
            }
        }
        if self.age.len() > 2 * self.by_key.len() + 64 {
            let by_key = &self.by_key;
            self.age
                .retain(|(k, s)| by_key.get(k).is_some_and(|e| e.serial == *s));
        }
    }
}

/// The keys of this instance (with the Redis engine, a webhook key is also checked
/// in Redis: see the journal).
pub(crate) struct Idempotency {
    ttl: Duration,
    max_keys: usize,
    inner: Mutex<Inner>,
}

impl Idempotency {
    /// A store keeping keys `ttl` and at most `max_keys` of them (at least 1).
    pub(crate) fn new(ttl: Duration, max_keys: usize) -> Arc<Idempotency> {
        Arc::new(Idempotency {
            ttl,
            max_keys: max_keys.max(1),
            inner: Mutex::default(),
        })
    }

    /// How long an accepted webhook task's key is kept.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Looks `req` up; if unseen, task `task_id` takes the key (see [`Claim`]).
    pub(crate) fn begin(self: &Arc<Self>, req: &Request, task_id: &str) -> Seen {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.trim(now, self.max_keys + 1);
        if let Some(e) = inner.by_key.get(&req.key).filter(|e| e.expires > now) {
            let id = e.task_id.to_string();
            return match (e.body == req.body, e.phase) {
                (false, _) => Seen::Mismatch(id),
                (true, Phase::Accepted) => Seen::Accepted(id),
                (true, Phase::Live) => Seen::InProgress(id),
            };
        }
        inner.trim(now, self.max_keys);
        inner.serial += 1;
        let serial = inner.serial;
        let entry = Entry {
            body: req.body,
            task_id: task_id.into(),
            phase: Phase::Live,
            expires: now + self.ttl,
            serial,
        };
        inner.by_key.insert(req.key, entry);
        inner.age.push_back((req.key, serial));
        Seen::New(Claim {
            store: self.clone(),
            key: req.key,
            serial,
            kept: false,
        })
    }

    /// Puts back the key of a webhook task accepted before (read from the journal
    /// at start-up, or from Redis), accepted until `expires_in` from now.
    pub(crate) fn restore(&self, req: &Request, task_id: &str, expires_in: Duration) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.trim(now, self.max_keys);
        inner.serial += 1;
        let serial = inner.serial;
        let entry = Entry {
            body: req.body,
            task_id: task_id.into(),
            phase: Phase::Accepted,
            expires: now + expires_in,
            serial,
        };
        inner.by_key.insert(req.key, entry);
        inner.age.push_back((req.key, serial));
    }

    /// Keys kept right now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().by_key.len()
    }
}

/// A task's hold on its key: let go when dropped (the sync task ended, the webhook
/// task was refused), unless [`Claim::accepted`] kept it for the TTL.
pub(crate) struct Claim {
    store: Arc<Idempotency>,
    key: Digest,
    serial: u64,
    kept: bool,
}

impl Claim {
    /// The key's and the body's digests.
    pub(crate) fn digests(&self) -> (Digest, Digest) {
        let inner = self.store.inner.lock();
        let body = inner.by_key.get(&self.key).map_or([0; 32], |e| e.body);
        (self.key, body)
    }

    /// The webhook task was accepted: repeats get its answer for the TTL.
    pub(crate) fn accepted(mut self) {
        self.kept = true;
        let mut inner = self.store.inner.lock();
        if let Some(e) = inner.by_key.get_mut(&self.key) {
            if e.serial == self.serial {
                e.phase = Phase::Accepted;
                e.expires = Instant::now() + self.store.ttl;
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.kept {
            self.store.inner.lock().remove_if(&self.key, self.serial);
        }
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Claim({})", self.serial)
    }
}

impl PartialEq for Claim {
    fn eq(&self, other: &Self) -> bool {
        self.serial == other.serial
    }
}

impl Eq for Claim {}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, body: &str) -> Request {
        let mut h = http::HeaderMap::new();
        h.insert(HEADER, key.parse().unwrap());
        Request::of(&h, "billing", body.as_bytes())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_repeat_is_told_apart_by_phase_and_body() {
        let s = Idempotency::new(Duration::from_secs(60), 10);
        let Seen::New(claim) = s.begin(&req("k", "b"), "t1") else {
            panic!("new")
        };
        assert_eq!(s.begin(&req("k", "b"), "t2"), Seen::InProgress("t1".into()));
        assert_eq!(
            s.begin(&req("k", "other"), "t2"),
            Seen::Mismatch("t1".into())
        );
        claim.accepted();
        assert_eq!(s.begin(&req("k", "b"), "t3"), Seen::Accepted("t1".into()));
        // A sync task's key is let go when it ends.
        let Seen::New(sync) = s.begin(&req("s", "b"), "t4") else {
            panic!("new")
        };
        drop(sync);
        assert!(matches!(s.begin(&req("s", "b"), "t5"), Seen::New(_)));
        // Keys are per client.
        let mut h = http::HeaderMap::new();
        h.insert(HEADER, "k".parse().unwrap());
        let other = Request::of(&h, "other", b"b").unwrap().unwrap();
        assert!(matches!(s.begin(&other, "t6"), Seen::New(_)));
    }

    #[test]
    fn keys_are_bounded_and_expire() {
        let s = Idempotency::new(Duration::from_secs(60), 100);
        for i in 0..1000 {
            if let Seen::New(c) = s.begin(&req(&format!("k{i}"), "b"), "t") {
                c.accepted();
            }
        }
        assert_eq!(s.len(), 100);
        assert!(s.inner.lock().age.len() <= 2 * 100 + 64);
        assert!(
            matches!(s.begin(&req("k0", "b"), "t"), Seen::New(_)),
            "oldest dropped"
        );
        let short = Idempotency::new(Duration::ZERO, 10);
        if let Seen::New(c) = short.begin(&req("k", "b"), "t") {
            c.accepted();
        }
        assert!(
            matches!(short.begin(&req("k", "b"), "t"), Seen::New(_)),
            "expired"
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        let mut h = http::HeaderMap::new();
        h.insert(HEADER, "a b".parse().unwrap());
        assert!(Request::of(&h, "c", b"").is_err());
        h.insert(HEADER, "x".repeat(256).parse().unwrap());
        assert!(Request::of(&h, "c", b"").is_err());
        assert_eq!(Request::of(&http::HeaderMap::new(), "c", b""), Ok(None));
    }
}
