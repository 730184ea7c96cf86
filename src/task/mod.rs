//! Reading and validating a task body the way the original did (`JSON.parse`: last
//! repeated key wins, `5.0` is `5`, a leading UTF-8 BOM is skipped, `0` and `""` are
//! missing), and the body its Worker receives: the client's bytes untouched unless
//! the original would have sent something else.

mod error;
pub mod pattern;
pub mod schema;

pub use error::BodyError;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Highest accepted priority (1 is the most urgent).
pub const MAX_PRIORITY: u64 = 2_097_152;

/// The UTF-8 byte order mark, which the original's body parser skipped.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The message for a task without `group`, `function` or `contract` (the original's).
pub const MISSING_FIELDS: &str = "Missing group, function, or contract";

/// How the result comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The Worker's answer is relayed when complete.
    Sync,
    /// The Worker's chunks are relayed as they come.
    Stream,
    /// Accepted at once; the Worker POSTs the result to the webhook.
    Webhook,
}

impl Mode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Stream => "stream",
            Mode::Webhook => "webhook",
        }
    }
}

/// The routing fields of a valid task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// Worker group.
    pub group: String,
    /// Function name.
    pub function: String,
    /// Contract version.
    pub contract: u64,
    /// 1..=2097152, default 1.
    pub priority: u32,
    /// Result mode, default sync.
    pub mode: Mode,
    /// The named client it runs for (its share and limits in the queue); set once
    /// the client's key is known, `None` before (and for tasks journaled without it).
    pub client: Option<TaskClient>,
}

impl TaskSpec {
    /// The name of its client, for log lines (`-` when it has none).
    pub fn client_name(&self) -> &str {
        self.client.as_ref().map_or("-", |c| &c.name)
    }
}

/// The named client of a task (compared by name: its limits may be reloaded).
#[derive(Debug, Clone)]
pub struct TaskClient(pub std::sync::Arc<crate::auth::clients::ClientSpec>);

impl PartialEq for TaskClient {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for TaskClient {}

impl std::ops::Deref for TaskClient {
    type Target = crate::auth::clients::ClientSpec;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The members of a JSON object in order, keys decoded, values raw. Repeated keys
/// are all kept; [`Members::last`] reads them the way `JSON.parse` does (last wins).
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// An object key, borrowed from the body unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Members<'a> {
    /// The value of the last member named `name` (`JSON.parse` keeps the last one).
    fn last(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    /// True when some key appears more than once.
    fn has_repeats(&self) -> bool {
        // A task has half a dozen members: comparing each pair is cheaper than
        // hashing them all (this runs for every task).
        const PAIRWISE_UP_TO: usize = 16;
        if self.0.len() <= PAIRWISE_UP_TO {
            return self
                .0
                .iter()
                .enumerate()
                .any(|(i, (k, _))| self.0[..i].iter().any(|(earlier, _)| earlier == k));
        }
        let mut seen = HashSet::with_capacity(self.0.len());
        !self.0.iter().all(|(k, _)| seen.insert(k.as_ref()))
    }
}

/// Byte caps on the client strings a task carries (they are kept in the task board,
/// logs and metrics, so a body-sized name would be copied everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest `group`, `function` and `mode`, in bytes. Default 256.
    pub max_name_bytes: usize,
    /// Longest `webhook.url`, in bytes. Default 2048.
    pub max_url_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_bytes: 256,
            max_url_bytes: 2048,
        }
    }
}

/// The member unless the original's `!value` check called it missing: absent, or
/// JavaScript-falsy (`null`, `false`, `""`, a zero such as `0`, `-0` or `0.0`).
fn present(v: Option<&RawValue>) -> Option<&RawValue> {
    v.filter(|r| !is_falsy(r.get()))
}

fn is_falsy(raw: &str) -> bool {
    match raw.as_bytes().first() {
        Some(b'n' | b'f') => raw == "null" || raw == "false",
        Some(b'"') => raw == "\"\"",
        Some(b'-' | b'0') => serde_json::from_str::<f64>(raw).is_ok_and(|n| n == 0.0),
        _ => false,
    }
}

/// Why a client string was refused.
enum Refused {
    NotString,
    TooLong,
}

/// Decodes a JSON string of at most `max` bytes. A raw value longer than any
/// escape-laden encoding of `max` bytes is refused before anything is copied.
fn bounded_str(v: &RawValue, max: usize) -> Result<String, Refused> {
    let raw = v.get();
    if !raw.starts_with('"') {
        return Err(Refused::NotString);
    }
    // `\uXXXX` is the longest encoding of one byte: 6 raw bytes, plus the quotes.
    if raw.len() > max.saturating_mul(6).saturating_add(2) {
        return Err(Refused::TooLong);
    }
    let s = serde_json::from_str::<String>(raw).map_err(|_| Refused::NotString)?;
    if s.len() > max {
        return Err(Refused::TooLong);
    }
    Ok(s)
}

/// [`bounded_str`] with the reason for a `400`.
fn bounded(v: &RawValue, field: &'static str, max: usize) -> Result<String, BodyError> {
    bounded_str(v, max).map_err(|e| match e {
        Refused::NotString => BodyError::NotAString(field),
        Refused::TooLong => BodyError::TooLong { field, max },
    })
}

/// Validates a task body with the default [`Limits`]; the error is the `400`'s reason.
pub fn parse(body: &[u8]) -> Result<TaskSpec, BodyError> {
    parse_with(body, &Limits::default())
}

/// Validates a task body; the error is the `400`'s reason.
pub fn parse_with(body: &[u8], limits: &Limits) -> Result<TaskSpec, BodyError> {
    let members = members(body)?;
    Ok(read(&members, limits)?.spec)
}

/// A valid task and the body its Worker receives.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The routing fields.
    pub spec: TaskSpec,
    /// What is sent to the Worker: the client's bytes unchanged (the same buffer,
    /// past a BOM) unless the original would have sent something else (see
    /// [`parse_for_worker`]).
    pub forward: Bytes,
    /// The client's negative `priority` (e.g. `-1`), which the original ran and which
    /// is read as the default priority 1; `None` otherwise. Worth a warning.
    pub negative_priority: Option<i64>,
}

/// Validates a task body and prepares what the Worker receives. The original
/// forwarded `JSON.stringify(JSON.parse(body))` without `priority`: a real Worker
/// refuses `priority: null` and reads a repeated key once. So when the body has a
/// `priority`, a repeated top-level key or a float `contract` (`1.0`), the Worker
/// gets its members in first-seen order, each with its last value, `priority`
/// left out and `contract` as an integer; otherwise the client's bytes as they are
/// (past a leading BOM, which a Worker's JSON parser would refuse).
pub fn parse_for_worker(body: &Bytes, limits: &Limits) -> Result<Parsed, BodyError> {
    let members = members(body)?;
    let read = read(&members, limits)?;
    let forward = if read.priority_given || read.contract_float || members.has_repeats() {
        Bytes::from(rewrite(&members, read.spec.contract))
    } else if body.starts_with(BOM) {
        body.slice(BOM.len()..)
    } else {
        body.clone()
    };
    Ok(Parsed {
        spec: read.spec,
        forward,
        negative_priority: read.negative_priority,
    })
}

/// The JSON text of a task body's `input` member (the last one, as `JSON.parse`
/// reads it); `None` when it has none or is not a JSON object.
pub fn input_json(body: &[u8]) -> Option<&str> {
    let members = members(body).ok()?;
    members.last("input").map(RawValue::get)
}

/// The body's top-level members (after a leading BOM), or the reason for a `400`.
fn members(body: &[u8]) -> Result<Members<'_>, BodyError> {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(BodyError::NotAnObject {
            empty: first.is_none(),
        });
    }
    serde_json::from_slice(body).map_err(BodyError::InvalidJson)
}

/// The members again, as `JSON.stringify` of the parsed object would list them
/// (minus `priority`); values keep the client's bytes.
fn rewrite(members: &Members<'_>, contract: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        members
            .0
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + 2,
    );
    out.push(b'{');
    let mut written: HashSet<&str> = HashSet::with_capacity(members.0.len());
    for (key, _) in &members.0 {
        if key == "priority" || !written.insert(key.as_ref()) {
            continue;
        }
        if written.len() > 1 {
            out.push(b',');
        }
        // Encoding a string cannot fail.
        out.extend_from_slice(
            serde_json::to_string(key.as_ref())
                .unwrap_or_default()
                .as_bytes(),
        );
        out.push(b':');
        if key == "contract" {
            out.extend_from_slice(contract.to_string().as_bytes());
        } else if let Some(v) = members.last(key) {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    out.push(b'}');
    out
}

/// A number that `JSON.parse` reads as an integer: `5`, `5.0`, `5e0`. `None` for
/// anything else (fractions, strings, out of the exactly representable range).
fn integral(raw: &RawValue) -> Option<(i64, bool)> {
    let text = raw.get();
    if let Ok(n) = serde_json::from_str::<i64>(text) {
        return Some((n, false));
    }
    let f = serde_json::from_str::<f64>(text).ok()?;
    // 2^53: beyond it a float no longer names one integer.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT).then_some((f as i64, true))
}

/// The fields read from the members.
struct Read {
    spec: TaskSpec,
    /// A `priority` member was present (any value).
    priority_given: bool,
    /// `contract` was written as a float (`1.0`, `1e0`).
    contract_float: bool,
    /// A negative integer `priority`, read as the default.
    negative_priority: Option<i64>,
}

fn read(f: &Members<'_>, limits: &Limits) -> Result<Read, BodyError> {
    let (group, function, contract) = (f.last("group"), f.last("function"), f.last("contract"));
    let (Some(group), Some(function), Some(contract)) =
        (present(group), present(function), present(contract))
    else {
        return Err(BodyError::MissingFields);
    };
    let name_max = limits.max_name_bytes;
    let group = bounded(group, "group", name_max)?;
    let function = bounded(function, "function", name_max)?;
    let (contract, contract_float) = match integral(contract) {
        Some((n, float)) if n >= 0 => (n as u64, float),
        _ => return Err(BodyError::BadContract),
    };
    if let Some(input) = f.last("input").filter(|i| i.get() != "null") {
        if !input.get().starts_with('{') {
            return Err(BodyError::InputNotAnObject);
        }
    }
    let priority_raw = f.last("priority");
    // The original ran `priority || 1`-style defaults: null and 0 mean the default,
    // and it ran a negative priority too (read here as the default, with a warning).
    let mut negative_priority = None;
    let priority = match priority_raw.filter(|p| p.get() != "null") {
        None => 1,
        Some(p) => match integral(p) {
            Some((0, _)) => 1,
            Some((n, _)) if n < 0 => {
                negative_priority = Some(n);
                1
            }
            Some((n, _)) if (1..=MAX_PRIORITY as i64).contains(&n) => n as u32,
            _ => return Err(BodyError::BadPriority),
        },
    };
    let mode = match f.last("mode").filter(|m| m.get() != "null") {
        None => Mode::Sync,
        Some(m) => match bounded(m, "mode", name_max)?.as_str() {
            "sync" => Mode::Sync,
            "stream" => Mode::Stream,
            "webhook" => Mode::Webhook,
            _ => return Err(BodyError::BadMode),
        },
    };
    if mode == Mode::Webhook {
        let url = f
            .last("webhook")
            .filter(|w| w.get().starts_with('{'))
            .and_then(|w| serde_json::from_str::<Members>(w.get()).ok())
            .and_then(|w| w.last("url"))
            .filter(|u| u.get().starts_with('"'));
        match url.map(|u| bounded_str(u, limits.max_url_bytes)) {
            Some(Ok(u)) if !u.is_empty() => {}
            Some(Err(Refused::TooLong)) => {
                return Err(BodyError::TooLong {
                    field: "webhook.url",
                    max: limits.max_url_bytes,
                });
            }
            _ => return Err(BodyError::MissingWebhookUrl),
        }
    }
    Ok(Read {
        spec: TaskSpec {
            group,
            function,
            contract,
            priority,
            mode,
            client: None,
        },
        priority_given: priority_raw.is_some(),
        contract_float,
        negative_priority,
    })
}

#[cfg(test)]
mod tests;
