//! Reading and validating a task body. The body is parsed only to read the routing
//! fields; the bytes forwarded to the Worker are the client's, untouched.

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

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    group: Option<&'a RawValue>,
    #[serde(borrow)]
    function: Option<&'a RawValue>,
    #[serde(borrow)]
    contract: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    priority: Option<&'a RawValue>,
    #[serde(borrow)]
    mode: Option<&'a RawValue>,
    #[serde(borrow)]
    webhook: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Webhook<'a> {
    #[serde(borrow)]
    url: Option<&'a RawValue>,
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
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(if first.is_none() {
            "Request body must be a JSON object (got an empty body)".into()
        } else {
            "Request body must be a JSON object".into()
        });
    }
    let f: Fields = serde_json::from_slice(body).map_err(|e| format!("Invalid JSON body: {e}"))?;
    if is_null(f.group) || is_null(f.function) || is_null(f.contract) {
        return Err("Missing group, function, or contract".into());
    }
    let name_max = limits.max_name_bytes;
    let group = bounded(f.group.unwrap(), "group", name_max)?;
    let function = bounded(f.function.unwrap(), "function", name_max)?;
    if group.is_empty() || function.is_empty() {
        return Err("Missing group, function, or contract".into());
    }
    let contract = serde_json::from_str::<u64>(f.contract.unwrap().get())
        .map_err(|_| "contract must be a non-negative integer".to_string())?;
    if let Some(input) = f.input.filter(|i| i.get() != "null") {
        if !input.get().starts_with('{') {
            return Err("input must be an object".into());
        }
    }
    let priority = match f.priority.filter(|p| p.get() != "null") {
        None => 1,
        Some(p) => match serde_json::from_str::<u64>(p.get()) {
            Ok(n) if (1..=MAX_PRIORITY).contains(&n) => n as u32,
            _ => {
                return Err(format!(
                    "priority must be an integer from 1 to {MAX_PRIORITY}"
                ))
            }
        },
    };
    let mode = match f.mode.filter(|m| m.get() != "null") {
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
            .webhook
            .and_then(|w| serde_json::from_str::<Webhook>(w.get()).ok())
            .and_then(|w| w.url)
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
    Ok(TaskSpec {
        group,
        function,
        contract,
        priority,
        mode,
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
        for p in ["0", "2097153", "1.5", "\"1\"", "-1"] {
            let body = format!(r#"{{"group":"g","function":"f","contract":1,"priority":{p}}}"#);
            assert!(err(&body).contains("priority"), "{p}");
        }
        assert!(parse(br#"{"group":"g","function":"f","contract":1,"priority":2097152}"#).is_ok());
        assert!(err(r#"{"group":"g","function":"f","contract":1,"mode":"fast"}"#).contains("mode"));
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
