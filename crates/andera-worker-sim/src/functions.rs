//! The functions a simulated Worker exposes, their parameter schemas, input
//! validation, and what each function does.

use std::time::Duration;

use serde_json::{json, Map, Value};

/// Which function catalogue a simulated Worker exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FunctionSet {
    /// The standard catalogue: `hello`, `sleep`, `fail`, `echo`, `ticker`.
    #[default]
    Standard,
    /// Like `Standard`, but `hello` also takes a `greeting` parameter, so the
    /// function list conflicts with `Standard` Workers of the same group and
    /// contract.
    Alternate,
    /// `Standard` plus `shout` (`{"text"}`: answers it in capitals), so the
    /// function list conflicts with `Standard` Workers and only this one exposes
    /// `shout`.
    Extended,
}

impl std::str::FromStr for FunctionSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "standard" => Ok(FunctionSet::Standard),
            "alternate" => Ok(FunctionSet::Alternate),
            "extended" => Ok(FunctionSet::Extended),
            other => Err(format!(
                "unknown function set {other:?} (expected standard, alternate or extended)"
            )),
        }
    }
}

/// One exposed function: its name and parameter schema.
#[derive(Debug, Clone)]
pub(crate) struct FunctionDef {
    pub name: String,
    /// `{param: {type, required, default, ...}}` as published in `/health`.
    pub params: Map<String, Value>,
    /// Published without `params` and takes any input, unchecked (`echo`, which
    /// reports its own request; a real Worker would refuse every input key there).
    pub open: bool,
    /// A function of [`crate::SimConfig::custom_functions`]: it answers its input.
    pub custom: bool,
}

/// The params every simulated function but `echo` publishes on top of its own:
/// `label` (recorded in the stats) and `sleepMs` (delay before answering).
fn with_common(value: Value) -> Map<String, Value> {
    let mut map = match value {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.insert("label".into(), json!({"type": "string", "required": false}));
    map.insert(
        "sleepMs".into(),
        json!({"type": "number", "required": false, "min": 0}),
    );
    map
}

fn def(name: &str, params: Value) -> FunctionDef {
    FunctionDef {
        name: name.to_string(),
        params: with_common(params),
        open: false,
        custom: false,
    }
}

/// The catalogue of `set`, then `custom` functions (name, published `params`).
pub(crate) fn catalog(set: FunctionSet, custom: &[(String, Value)]) -> Vec<FunctionDef> {
    let hello = match set {
        FunctionSet::Standard | FunctionSet::Extended => json!({
            "name": {"type": "string", "required": false, "default": "World"}
        }),
        FunctionSet::Alternate => json!({
            "name": {"type": "string", "required": false, "default": "World"},
            "greeting": {"type": "string", "required": false, "default": "Hello"}
        }),
    };
    let mut defs = vec![
        def("hello", hello),
        def(
            "sleep",
            json!({"ms": {"type": "number", "required": true, "min": 0}}),
        ),
        def(
            "fail",
            json!({"message": {"type": "string", "required": false, "default": "boom"}}),
        ),
        FunctionDef {
            name: "echo".into(),
            params: Map::new(),
            open: true,
            custom: false,
        },
        def(
            "ticker",
            json!({
                "count": {"type": "number", "required": false, "default": 5, "min": 0},
                "intervalMs": {"type": "number", "required": false, "default": 100, "min": 0}
            }),
        ),
    ];
    if set == FunctionSet::Extended {
        defs.push(def(
            "shout",
            json!({"text": {"type": "string", "required": false, "default": "hey"}}),
        ));
    }
    for (name, params) in custom {
        defs.push(FunctionDef {
            name: name.clone(),
            params: params.as_object().cloned().unwrap_or_default(),
            open: false,
            custom: true,
        });
    }
    defs
}

/// The `functions` array of the `/health` answer.
pub(crate) fn catalog_json(defs: &[FunctionDef]) -> Value {
    Value::Array(
        defs.iter()
            .map(|d| {
                if d.open {
                    json!({"name": d.name})
                } else {
                    json!({"name": d.name, "params": Value::Object(d.params.clone())})
                }
            })
            .collect(),
    )
}

/// The input with the defaults of absent params filled in, as the function sees it.
pub(crate) fn with_defaults(
    def: &FunctionDef,
    mut input: Map<String, Value>,
) -> Map<String, Value> {
    for (key, spec) in &def.params {
        if let (false, Some(default)) = (input.contains_key(key), spec.get("default")) {
            input.insert(key.clone(), default.clone());
        }
    }
    input
}

/// What `echo` reports about its own request.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestInfo {
    pub body_len: usize,
    pub body_fnv64: String,
    pub headers: Map<String, Value>,
    /// Headers to add to the answer (`input.responseHeaders`, string values).
    pub response_headers: Vec<(String, String)>,
}

/// A validated call, ready to run.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    Hello {
        greeting: String,
        name: String,
    },
    Sleep {
        ms: Value,
    },
    Fail {
        message: String,
    },
    Echo(RequestInfo),
    Ticker {
        count: u64,
        interval: Duration,
    },
    Shout {
        text: String,
    },
    /// A custom function: answers `{"input": ...}`.
    Custom {
        input: Value,
    },
}

fn str_of(input: &Map<String, Value>, key: &str, default: &str) -> String {
    input
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

fn num_of(input: &Map<String, Value>, key: &str, default: f64) -> f64 {
    input
        .get(key)
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(default)
}

/// Turns a validated input into a call; `None` for an unknown function name.
pub(crate) fn build_call(
    name: &str,
    input: &Map<String, Value>,
    info: RequestInfo,
) -> Option<Call> {
    Some(match name {
        "hello" => Call::Hello {
            greeting: str_of(input, "greeting", "Hello"),
            name: str_of(input, "name", "World"),
        },
        "sleep" => Call::Sleep {
            ms: input.get("ms").cloned().unwrap_or_else(|| json!(0)),
        },
        "fail" => Call::Fail {
            message: str_of(input, "message", "boom"),
        },
        "echo" => Call::Echo(info),
        "ticker" => Call::Ticker {
            count: num_of(input, "count", 5.0) as u64,
            interval: ms_duration(num_of(input, "intervalMs", 100.0)),
        },
        "shout" => Call::Shout {
            text: str_of(input, "text", "hey"),
        },
        _ => return None,
    })
}

/// A non-negative millisecond count as a duration (capped at one day).
pub(crate) fn ms_duration(ms: f64) -> Duration {
    if ms.is_finite() && ms > 0.0 {
        Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0)
    } else {
        Duration::ZERO
    }
}

/// The outcome of a call in sync (and webhook) mode: `(success, body)`.
pub(crate) async fn run_sync(call: &Call) -> (bool, Value) {
    match call {
        Call::Hello { greeting, name } => (
            true,
            json!({"success": true, "result": {"message": format!("{greeting} {name}!")}}),
        ),
        Call::Sleep { ms } => {
            tokio::time::sleep(ms_duration(ms.as_f64().unwrap_or(0.0))).await;
            (true, json!({"success": true, "result": {"slept": ms}}))
        }
        Call::Fail { message } => (false, json!({"success": false, "error": message})),
        Call::Echo(info) => (
            true,
            json!({"success": true, "result": {
                "bodyLen": info.body_len,
                "bodyFnv64": info.body_fnv64,
                "headers": Value::Object(info.headers.clone()),
            }}),
        ),
        Call::Ticker { count, interval } => {
            let total = interval.saturating_mul(u32::try_from(*count).unwrap_or(u32::MAX));
            tokio::time::sleep(total).await;
            (true, json!({"success": true, "result": {"ticks": count}}))
        }
        Call::Shout { text } => (
            true,
            json!({"success": true, "result": {"message": text.to_uppercase()}}),
        ),
        Call::Custom { input } => (true, json!({"success": true, "result": {"input": input}})),
    }
}

/// The chunks of a streaming call, each preceded by a delay.
pub(crate) type StreamPlan = Box<dyn Iterator<Item = (Duration, String)> + Send>;

/// The chunks of a streaming call; `None` for a function that does not stream
/// (it answers as in sync mode).
pub(crate) fn stream_plan(call: &Call) -> Option<StreamPlan> {
    match call {
        Call::Hello { greeting, name } => Some(Box::new(
            [
                (Duration::ZERO, format!("{greeting} ")),
                (Duration::from_millis(50), format!("{name}!")),
            ]
            .into_iter(),
        )),
        Call::Ticker { count, interval } => {
            let interval = *interval;
            Some(Box::new(
                (1..=*count).map(move |i| (interval, format!("tick {i}\n"))),
            ))
        }
        _ => None,
    }
}
