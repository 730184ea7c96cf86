//! Reading and validating a task body the way the original did (`JSON.parse`: last
//! repeated key wins, `5.0` is `5`), and the body its Worker receives: the client's
//! bytes untouched unless the original would have sent something else.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Highest accepted priority (1 is the most urgent).
pub const MAX_PRIORITY: u64 = 2_097_152;

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

fn is_null(v: Option<&RawValue>) -> bool {
    v.is_none_or(|r| r.get() == "null")
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

/// [`bounded_str`] with the message for a `400`.
fn bounded(v: &RawValue, what: &str, max: usize) -> Result<String, String> {
    bounded_str(v, max).map_err(|e| match e {
        Refused::NotString => format!("{what} must be a string"),
        Refused::TooLong => format!("{what} is too long (limit {max} bytes)"),
    })
}

/// Validates a task body with the default [`Limits`]; the error is the message for a `400`.
pub fn parse(body: &[u8]) -> Result<TaskSpec, String> {
    parse_with(body, &Limits::default())
}

/// Validates a task body; the error is the message for a `400`.
pub fn parse_with(body: &[u8], limits: &Limits) -> Result<TaskSpec, String> {
    let members = members(body)?;
    Ok(read(&members, limits)?.spec)
}

/// A valid task and the body its Worker receives.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The routing fields.
    pub spec: TaskSpec,
    /// What is sent to the Worker: the client's bytes unchanged (the same buffer)
    /// unless the original would have sent something else (see [`parse_for_worker`]).
    pub forward: Bytes,
}

/// Validates a task body and prepares what the Worker receives. The original
/// forwarded `JSON.stringify(JSON.parse(body))` without `priority`: a real Worker
/// refuses `priority: null` and reads a repeated key once. So when the body has a
/// `priority`, a repeated top-level key or a float `contract` (`1.0`), the Worker
/// gets its members in first-seen order, each with its last value, `priority`
/// left out and `contract` as an integer; otherwise the client's bytes as they are.
pub fn parse_for_worker(body: &Bytes, limits: &Limits) -> Result<Parsed, String> {
    let members = members(body)?;
    let read = read(&members, limits)?;
    let forward = if read.priority_given || read.contract_float || members.has_repeats() {
        Bytes::from(rewrite(&members, read.spec.contract))
    } else {
        body.clone()
    };
    Ok(Parsed {
        spec: read.spec,
        forward,
    })
}

/// The body's top-level members, or the message for a `400`.
fn members(body: &[u8]) -> Result<Members<'_>, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(if first.is_none() {
            "Request body must be a JSON object (got an empty body)".into()
        } else {
            "Request body must be a JSON object".into()
        });
    }
    serde_json::from_slice(body).map_err(|e| format!("Invalid JSON body: {e}"))
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
}

fn read(f: &Members<'_>, limits: &Limits) -> Result<Read, String> {
    let (group, function, contract) = (f.last("group"), f.last("function"), f.last("contract"));
    if is_null(group) || is_null(function) || is_null(contract) {
        return Err("Missing group, function, or contract".into());
    }
    let name_max = limits.max_name_bytes;
    let group = bounded(group.unwrap(), "group", name_max)?;
    let function = bounded(function.unwrap(), "function", name_max)?;
    if group.is_empty() || function.is_empty() {
        return Err("Missing group, function, or contract".into());
    }
    let (contract, contract_float) = match contract.and_then(integral) {
        Some((n, float)) if n >= 0 => (n as u64, float),
        _ => return Err("contract must be a non-negative integer".into()),
    };
    if let Some(input) = f.last("input").filter(|i| i.get() != "null") {
        if !input.get().starts_with('{') {
            return Err("input must be an object".into());
        }
    }
    let priority_raw = f.last("priority");
    // The original ran `priority || 1`-style defaults: null and 0 mean the default.
    let priority = match priority_raw.filter(|p| p.get() != "null") {
        None => 1,
        Some(p) => match integral(p) {
            Some((0, _)) => 1,
            Some((n, _)) if (1..=MAX_PRIORITY as i64).contains(&n) => n as u32,
            _ => {
                return Err(format!(
                    "priority must be an integer from 1 to {MAX_PRIORITY}"
                ))
            }
        },
    };
    let mode = match f.last("mode").filter(|m| m.get() != "null") {
        None => Mode::Sync,
        Some(m) => match bounded(m, "mode", name_max)?.as_str() {
            "sync" => Mode::Sync,
            "stream" => Mode::Stream,
            "webhook" => Mode::Webhook,
            _ => return Err("mode must be one of sync, stream, webhook".into()),
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
                let max = limits.max_url_bytes;
                return Err(format!("webhook.url is too long (limit {max} bytes)"));
            }
            _ => return Err("Missing or invalid webhook.url for mode webhook".into()),
        }
    }
    Ok(Read {
        spec: TaskSpec {
            group,
            function,
            contract,
            priority,
            mode,
        },
        priority_given: priority_raw.is_some(),
        contract_float,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn accepts_the_documented_shape() {
        let t = parse(br#"{"group":"g","function":"hello","contract":1,"input":{"name":"A"},"priority":7,"mode":"stream","extra":[1]}"#).unwrap();
        assert_eq!((t.contract, t.priority, t.mode), (1, 7, Mode::Stream));
        let d = parse(br#"{"group":"g","function":"f","contract":2}"#).unwrap();
        assert_eq!((d.priority, d.mode), (1, Mode::Sync));
    }

    #[test]
    fn original_messages() {
        assert_eq!(
            err(r#"{"group":"g","function":"f"}"#),
            "Missing group, function, or contract"
        );
        assert_eq!(
            err(r#"{"group":"g","function":"f","contract":1,"mode":"webhook"}"#),
            "Missing or invalid webhook.url for mode webhook"
        );
        assert_eq!(
            err(
                r#"{"group":"g","function":"f","contract":1,"mode":"webhook","webhook":{"url":5}}"#
            ),
            "Missing or invalid webhook.url for mode webhook"
        );
    }

    #[test]
    fn wrong_types_and_ranges() {
        assert!(err("[1]").contains("JSON object"));
        assert!(err("{nope").contains("Invalid JSON"));
        assert!(err(r#"{"group":1,"function":"f","contract":1}"#).contains("group"));
        assert!(err(r#"{"group":"g","function":"f","contract":"1"}"#).contains("contract"));
        assert!(err(r#"{"group":"g","function":"f","contract":1,"input":[]}"#).contains("input"));
        for p in ["2097153", "1.5", "\"1\"", "\"x\"", "-1", "1e400", "true"] {
            let body = format!(r#"{{"group":"g","function":"f","contract":1,"priority":{p}}}"#);
            assert!(err(&body).contains("priority"), "{p}");
        }
        assert!(parse(br#"{"group":"g","function":"f","contract":1,"priority":2097152}"#).is_ok());
        assert!(err(r#"{"group":"g","function":"f","contract":1,"mode":"fast"}"#).contains("mode"));
    }

    fn forward(body: &str) -> (TaskSpec, String) {
        let p = parse_for_worker(&Bytes::from(body.to_string()), &Limits::default()).unwrap();
        (p.spec, String::from_utf8(p.forward.to_vec()).unwrap())
    }

    #[test]
    fn accepts_what_the_original_accepted() {
        for (p, want) in [
            ("null", 1),
            ("0", 1),
            ("5.0", 5),
            ("1e0", 1),
            ("-0", 1),
            ("7", 7),
        ] {
            let body = format!(r#"{{"group":"g","function":"f","contract":1,"priority":{p}}}"#);
            assert_eq!(parse(body.as_bytes()).unwrap().priority, want, "{p}");
        }
        let t = parse(br#"{"group":"g","function":"f","contract":1.0}"#).unwrap();
        assert_eq!(t.contract, 1);
        assert_eq!(
            parse(br#"{"group":"g","function":"f","contract":2e0}"#)
                .unwrap()
                .contract,
            2
        );
        assert!(err(r#"{"group":"g","function":"f","contract":1.5}"#).contains("contract"));
        assert!(err(r#"{"group":"g","function":"f","contract":-1}"#).contains("contract"));
        // Repeated keys: the last one wins, as with JSON.parse.
        let t = parse(
            br#"{"group":"a","group":"g","function":"f","contract":1,"priority":9,"priority":3}"#,
        )
        .unwrap();
        assert_eq!((t.group.as_str(), t.priority), ("g", 3));
        assert!(
            err(r#"{"group":"g","function":"f","contract":1,"priority":3,"priority":1.5}"#)
                .contains("priority")
        );
        let hook = r#"{"group":"g","function":"f","contract":1,"mode":"webhook","webhook":{"url":5,"url":"http://h/x"}}"#;
        assert_eq!(parse(hook.as_bytes()).unwrap().mode, Mode::Webhook);
    }

    #[test]
    fn the_worker_gets_what_the_original_sent() {
        // Nothing to change: the very same bytes (and buffer).
        let plain = r#"{ "group":"g", "function":"f","contract":1,"input":{"n":1.50} }"#;
        let bytes = Bytes::from(plain);
        let p = parse_for_worker(&bytes, &Limits::default()).unwrap();
        assert_eq!(p.forward.as_ptr(), bytes.as_ptr());
        // `priority` is never forwarded, whatever its value.
        for p in ["null", "0", "5.0", "3"] {
            let body = format!(
                r#"{{"group":"g","priority":{p},"function":"f","contract":1,"input":{{"a":[1, 2]}},"x":null}}"#
            );
            let (_, sent) = forward(&body);
            assert_eq!(
                sent,
                r#"{"group":"g","function":"f","contract":1,"input":{"a":[1, 2]},"x":null}"#
            );
        }
        // An integral float contract arrives as the integer; repeated keys once, last value, first place.
        let (spec, sent) =
            forward(r#"{"contract":1.0,"group":"a","function":"f","group":"g","\u0065":1}"#);
        assert_eq!(spec.group, "g");
        assert_eq!(sent, r#"{"contract":1,"group":"g","function":"f","e":1}"#);
        let v: serde_json::Value = serde_json::from_str(&sent).unwrap();
        assert_eq!(v["group"], "g");
    }

    #[test]
    fn a_repeated_key_is_found_in_small_and_large_bodies() {
        for extra in [0, 3, 14, 40] {
            let members: String = (0..extra).map(|i| format!(r#","k{i}":{i}"#)).collect();
            let plain = format!(r#"{{"group":"g","function":"f","contract":1{members}}}"#);
            let bytes = Bytes::from(plain.clone());
            let p = parse_for_worker(&bytes, &Limits::default()).unwrap();
            assert_eq!(
                p.forward.as_ptr(),
                bytes.as_ptr(),
                "{extra} extra: kept as sent"
            );
            // The repeat is the last member: found whichever way the keys are compared.
            let repeated = format!(r#"{},"group":"h"}}"#, &plain[..plain.len() - 1]);
            let (spec, sent) = forward(&repeated);
            assert_eq!(spec.group, "h", "{extra} extra");
            assert_eq!(
                sent.matches(r#""group""#).count(),
                1,
                "{extra} extra: {sent}"
            );
        }
    }

    #[test]
    fn client_strings_are_capped_in_bytes() {
        let limits = Limits {
            max_name_bytes: 8,
            max_url_bytes: 16,
        };
        let with = |field: &str, value: &str| {
            let mut v = serde_json::json!({"group":"g","function":"f","contract":1,
                "mode":"webhook","webhook":{"url":"http://h"}});
            match field {
                "url" => v["webhook"]["url"] = value.into(),
                f => v[f] = value.into(),
            }
            parse_with(v.to_string().as_bytes(), &limits)
        };
        assert!(with("group", "12345678").is_ok());
        // Escapes count once decoded: eight bytes written as `\u0041`.
        assert!(parse_with(
            br#"{"group":"\u0041\u0041\u0041\u0041\u0041\u0041\u0041\u0041","function":"f","contract":1}"#,
            &limits
        )
        .is_ok());
        for field in ["group", "function", "mode"] {
            let e = with(field, "123456789").unwrap_err();
            assert_eq!(e, format!("{field} is too long (limit 8 bytes)"));
            let e = with(field, &"x".repeat(10_000)).unwrap_err();
            assert!(e.contains("too long"), "{e}");
        }
        // é is two bytes.
        assert!(with("group", "éééé").is_ok());
        assert!(with("group", "ééééé").unwrap_err().contains("too long"));
        assert!(with("url", "http://h/1234567").is_ok());
        let e = with("url", "http://h/12345678").unwrap_err();
        assert_eq!(e, "webhook.url is too long (limit 16 bytes)");
        let d = parse(
            format!(
                r#"{{"group":"{}","function":"f","contract":1}}"#,
                "g".repeat(257)
            )
            .as_bytes(),
        );
        assert_eq!(d.unwrap_err(), "group is too long (limit 256 bytes)");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse(&body);
        }

        #[test]
        fn task_shaped_bodies_respect_the_caps(
            group in "(\\PC|\\\\u00e9|\\\\n){0,12}",
            function in "[a-z\\\\\"]{0,12}",
            contract in proptest::prelude::any::<i64>(),
            priority in proptest::option::of(proptest::prelude::any::<i64>()),
            mode in proptest::option::of("(sync|stream|webhook|x){1,2}"),
            url in proptest::option::of("[a-z:/]{0,24}"),
        ) {
            let limits = Limits { max_name_bytes: 6, max_url_bytes: 12 };
            let mut body = format!(r#"{{"group":"{group}","function":"{function}","contract":{contract}"#);
            if let Some(p) = priority { body += &format!(r#","priority":{p}"#); }
            if let Some(m) = &mode { body += &format!(r#","mode":"{m}""#); }
            if let Some(u) = &url { body += &format!(r#","webhook":{{"url":"{u}"}}"#); }
            body += "}";
            if let Ok(spec) = parse_with(body.as_bytes(), &limits) {
                proptest::prop_assert!(!spec.group.is_empty() && spec.group.len() <= 6);
                proptest::prop_assert!(!spec.function.is_empty() && spec.function.len() <= 6);
                proptest::prop_assert!((1..=MAX_PRIORITY).contains(&u64::from(spec.priority)));
                if spec.mode == Mode::Webhook {
                    proptest::prop_assert!(url.is_some_and(|u| !u.is_empty() && u.len() <= 12));
                }
            }
        }
    }
}
