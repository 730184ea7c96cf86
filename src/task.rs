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

fn is_null(v: Option<&RawValue>) -> bool {
    v.is_none_or(|r| r.get() == "null")
}

fn string(v: &RawValue, what: &str) -> Result<String, String> {
    serde_json::from_str::<String>(v.get()).map_err(|_| format!("{what} must be a string"))
}

/// Validates a task body; the error is the message for a `400`.
pub fn parse(body: &[u8]) -> Result<TaskSpec, String> {
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
    let group = string(f.group.unwrap(), "group")?;
    let function = string(f.function.unwrap(), "function")?;
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
        Some(m) => match string(m, "mode")?.as_str() {
            "sync" => Mode::Sync,
            "stream" => Mode::Stream,
            "webhook" => Mode::Webhook,
            _ => return Err("mode must be one of sync, stream, webhook".into()),
        },
    };
    if mode == Mode::Webhook {
        let url_ok = f
            .webhook
            .and_then(|w| serde_json::from_str::<Webhook>(w.get()).ok())
            .and_then(|w| w.url)
            .is_some_and(|u| serde_json::from_str::<String>(u.get()).is_ok_and(|s| !s.is_empty()));
        if !url_ok {
            return Err("Missing or invalid webhook.url for mode webhook".into());
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
}
