//! Task ids as the board keeps them: our UUID ids as their 16 bytes (in the map and
//! in the record), anything else as text with a 128-bit hash for its key.

/// A task id as the board's map key: our ids are UUIDs, kept as their 128 bits
/// (no string to allocate, hash or compare on the data path); any other id (a test's,
/// a journal's from elsewhere) as a 128-bit hash of its text, checked against the
/// record's id on every lookup.
pub(super) type TaskKey = u128;

pub(super) fn task_key(id: &str) -> TaskKey {
    match uuid::Uuid::try_parse(id) {
        Ok(uuid) => uuid.as_u128(),
        Err(_) => text_key(id),
    }
}

/// The key of an id that is not a UUID.
fn text_key(id: &str) -> TaskKey {
    use std::hash::BuildHasher;
    let seeded = |seed| foldhash::fast::FixedState::with_seed(seed).hash_one(id) as u128;
    (seeded(0x5eed_0001) << 64) | seeded(0x5eed_0002)
}

/// A record's id: a UUID's 16 bytes, written out when shown, or other text.
#[derive(Debug, Clone)]
pub(super) enum TaskId {
    Uuid(uuid::Uuid),
    Text(Box<str>),
}

impl TaskId {
    /// The id kept for `id` and its map key (the same as [`task_key`]), with the
    /// id parsed once and nothing allocated for a UUID: this runs for every task.
    pub(super) fn with_key(id: &str) -> (Self, TaskKey) {
        match uuid::Uuid::try_parse(id) {
            Ok(uuid) => {
                // Only the canonical form is kept as bytes: it is what `Display` writes back.
                let mut canonical = [0u8; uuid::fmt::Hyphenated::LENGTH];
                let kept = if uuid.hyphenated().encode_lower(&mut canonical) == id {
                    TaskId::Uuid(uuid)
                } else {
                    TaskId::Text(id.into())
                };
                (kept, uuid.as_u128())
            }
            Err(_) => (TaskId::Text(id.into()), text_key(id)),
        }
    }

    /// The id kept for `id`.
    #[cfg(test)]
    fn new(id: &str) -> Self {
        Self::with_key(id).0
    }

    pub(super) fn len(&self) -> usize {
        match self {
            TaskId::Uuid(_) => uuid::fmt::Hyphenated::LENGTH,
            TaskId::Text(t) => t.len(),
        }
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskId::Uuid(u) => u.hyphenated().fmt(f),
            TaskId::Text(t) => f.write_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_are_kept_as_bytes_and_shown_as_given() {
        let id = crate::proxy::task::next_task_id();
        let kept = TaskId::new(&id);
        assert!(matches!(kept, TaskId::Uuid(_)));
        assert_eq!(kept.to_string(), id);
        assert_eq!(kept.len(), id.len());
        assert_eq!(task_key(&id), uuid::Uuid::parse_str(&id).unwrap().as_u128());
        assert_eq!(TaskId::with_key(&id).1, task_key(&id));
        // Another spelling of a UUID is shown as it was written.
        let upper = id.to_uppercase();
        assert_eq!(TaskId::new(&upper).to_string(), upper);
    }

    #[test]
    fn other_ids_get_distinct_hashed_keys() {
        let keys: std::collections::HashSet<_> =
            (0..10_000).map(|i| task_key(&format!("t{i}"))).collect();
        assert_eq!(keys.len(), 10_000);
        assert_eq!(task_key("t1"), task_key("t1"));
        assert_eq!(TaskId::new("t1").to_string(), "t1");
        assert_eq!(TaskId::with_key("t1").1, task_key("t1"));
    }
}
