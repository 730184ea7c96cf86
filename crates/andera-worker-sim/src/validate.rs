//! A task's `input` checked against its function's published `params` exactly as
//! worker-core 0.1.3 does it (protocol §5), once the task holds a slot: unknown keys
//! first in JavaScript key order, then each param in schema order, the first
//! failure wins; JavaScript `typeof`, SameValueZero, `new RegExp(pattern)` without
//! flags matched on UTF-16 units, and lengths in UTF-16 units.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Names a JS object inherits from `Object.prototype`: as input keys they pass
/// the unknown-key check (`key in params`).
const PROTOTYPE_KEYS: &[&str] = &[
    "constructor",
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toLocaleString",
    "toString",
    "valueOf",
    "__proto__",
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
];

/// A JSON value whose objects keep their members in the order `JSON.parse` gives
/// them (first place, last value), which `serde_json::Value` does not.
enum Ordered {
    Object(Vec<(String, Value)>),
    Other(Value),
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                let mut place: HashMap<String, usize> = HashMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v: Value = map.next_value()?;
                    match place.get(&k) {
                        Some(&i) => out[i].1 = v,
                        None => {
                            place.insert(k.clone(), out.len());
                            out.push((k, v));
                        }
                    }
                }
                Ok(Ordered::Object(out))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Ordered, A::Error> {
                let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Ordered::Other(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Ordered, E> {
                Ok(Ordered::Other(Value::Null))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Ordered, E> {
                Ok(Ordered::Other(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ordered, E> {
                Ok(Ordered::Other(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ordered, E> {
                Ok(Ordered::Other(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ordered, E> {
                Ok(Ordered::Other(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ordered, E> {
                Ok(Ordered::Other(Value::String(v.into())))
            }
        }
        d.deserialize_any(V)
    }
}

/// A canonical array index ("0", "17"): JavaScript lists such keys first, ascending.
fn array_index(key: &str) -> Option<u32> {
    let n: u32 = key.parse().ok()?;
    (n < u32::MAX && n.to_string() == key).then_some(n)
}

/// Keys in JavaScript's own-key order: array indexes ascending, then the rest in
/// insertion order.
fn js_order<T>(members: Vec<(String, T)>) -> Vec<(String, T)> {
    let (mut indexes, rest): (Vec<_>, Vec<_>) = members
        .into_iter()
        .partition(|(k, _)| array_index(k).is_some());
    indexes.sort_by_key(|(k, _)| array_index(k));
    indexes.extend(rest);
    indexes
}

/// A number as JavaScript's `String(x)` prints it.
pub(crate) fn js_number(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    if x.fract() == 0.0 && x.abs() < 1e21 {
        return format!("{x:.0}");
    }
    if x.abs() >= 1e21 || x.abs() < 1e-6 {
        // Rust's shortest digits with JavaScript's exponent sign.
        let e = format!("{x:e}");
        return match e.split_once('e') {
            Some((m, exp)) if !exp.starts_with('-') => format!("{m}e+{exp}"),
            _ => e,
        };
    }
    format!("{x}")
}

/// `JSON.stringify(value)` for the `enum` message (numbers as JavaScript prints them).
fn js_json(value: &Value) -> String {
    match value {
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), js_number),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(js_json).collect();
            format!("[{}]", inner.join(","))
        }
        Value::Object(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), js_json(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// JavaScript truthiness of a schema field.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// `typeof`-based type check of a present value; `null` fails every type.
fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "array" => v.is_array(),
        "object" => v.is_object(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        // `typeof` never gives another name ("integer"): any present value fails.
        _ => false,
    }
}

/// SameValueZero of an `enum` member and a value (objects never match: they are
/// other objects).
fn same_value_zero(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => false,
    }
}

/// One param's checks on a present value (or its default).
fn check_param(key: &str, spec: &Map<String, Value>, value: &Value) -> Result<(), String> {
    if let Some(ty) = spec.get("type") {
        let ty = ty.as_str().unwrap_or("");
        if !type_ok(ty, value) {
            return Err(format!("Invalid type for param: {key}, expected {ty}"));
        }
    }
    if let Some(Value::Array(members)) = spec.get("enum") {
        if !members.iter().any(|m| same_value_zero(m, value)) {
            return Err(format!(
                "Invalid value for param: {key}, expected one of {}",
                js_json(&Value::Array(members.clone()))
            ));
        }
    }
    if let (Some(pattern), Value::String(s)) = (spec.get("pattern").filter(|p| truthy(p)), value) {
        let source = match pattern {
            Value::String(p) => p.clone(),
            other => js_json(other),
        };
        let regex = regress::Regex::with_flags(&source, regress::Flags::default())
            .map_err(|e| format!("Invalid regular expression: /{source}/: {e}"))?;
        let units: Vec<u16> = s.encode_utf16().collect();
        if regex.find_from_ucs2(&units, 0).next().is_none() {
            return Err(format!(
                "Invalid format for param: {key}, does not match pattern {source}"
            ));
        }
    }
    let (measure, what) = match value {
        Value::Number(n) => (n.as_f64().unwrap_or(f64::NAN), "Value for"),
        Value::String(s) => (s.encode_utf16().count() as f64, "Length of"),
        Value::Array(a) => (a.len() as f64, "Length of"),
        _ => return Ok(()),
    };
    if let Some(min) = spec.get("min").and_then(Value::as_f64) {
        if measure < min {
            return Err(format!("{what} param: {key} must be >= {}", js_number(min)));
        }
    }
    if let Some(max) = spec.get("max").and_then(Value::as_f64) {
        if measure > max {
            return Err(format!("{what} param: {key} must be <= {}", js_number(max)));
        }
    }
    Ok(())
}

/// Checks a task's `input` (its JSON text; `None` when absent) against a function's
/// published `params` as worker-core 0.1.3 does. `Err` is the message of the
/// Worker's `500 {"success":false,"error":...}`.
pub fn validate_input(params: &Map<String, Value>, input: Option<&str>) -> Result<(), String> {
    let members = match input.map(serde_json::from_str::<Ordered>) {
        None => Vec::new(),
        Some(Ok(Ordered::Object(m))) => m,
        Some(Ok(Ordered::Other(Value::Null))) => Vec::new(),
        Some(Ok(Ordered::Other(Value::Array(a)))) => a
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        // Refused before the slot (`Invalid input: must be an object`).
        Some(Ok(Ordered::Other(_))) => return Ok(()),
        Some(Err(e)) => return Err(format!("Invalid input: {e}")),
    };
    let members = js_order(members);
    for (key, _) in &members {
        if !params.contains_key(key) && !PROTOTYPE_KEYS.contains(&key.as_str()) {
            return Err(format!("Unexpected param: {key}"));
        }
    }
    let schema = js_order(params.iter().map(|(k, v)| (k.clone(), v)).collect());
    for (key, spec) in schema {
        let empty = Map::new();
        let spec = spec.as_object().unwrap_or(&empty);
        let value = match members.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => v,
            None if spec.get("required").is_some_and(truthy) => {
                return Err(format!("Missing required param: {key}"))
            }
            None => match spec.get("default") {
                Some(d) => d,
                None => continue,
            },
        };
        check_param(&key, spec, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(params: Value, input: &str) -> Result<(), String> {
        validate_input(params.as_object().unwrap(), Some(input))
    }

    #[test]
    fn the_protocols_test_vectors() {
        let ms = json!({"ms": {"type": "number", "required": true, "min": 0, "max": 600000}});
        assert_eq!(
            check(ms.clone(), "{}"),
            Err("Missing required param: ms".into())
        );
        assert_eq!(
            check(ms.clone(), r#"{"ms":"100"}"#),
            Err("Invalid type for param: ms, expected number".into())
        );
        assert_eq!(
            check(ms, r#"{"ms":600001}"#),
            Err("Value for param: ms must be <= 600000".into())
        );
        let abc = json!({"s": {"type": "string", "pattern": "abc"}});
        assert_eq!(check(abc, r#"{"s":"xxabcxx"}"#), Ok(()));
        let p = json!({"s": {"type": "string", "pattern": "^[a-z]+$", "min": 2, "max": 5}});
        assert_eq!(
            check(p.clone(), r#"{"s":"aBc"}"#),
            Err("Invalid format for param: s, does not match pattern ^[a-z]+$".into())
        );
        assert_eq!(
            check(p, r#"{"s":"a"}"#),
            Err("Length of param: s must be >= 2".into())
        );
        let e = json!({"e": {"type": "string", "enum": ["a", "b"]}});
        assert_eq!(
            check(e, r#"{"e":"c"}"#),
            Err(r#"Invalid value for param: e, expected one of ["a","b"]"#.into())
        );
        let x = json!({"x": {"type": "string"}});
        assert_eq!(
            check(x.clone(), r#"{"x":null}"#),
            Err("Invalid type for param: x, expected string".into())
        );
        assert_eq!(check(x, r#"{"constructor":1}"#), Ok(()));
        let r = json!({"r": {"type": "string", "required": true}});
        assert_eq!(check(r, r#"{"zz":1}"#), Err("Unexpected param: zz".into()));
        let s2 = json!({"s": {"type": "string", "max": 2}});
        assert_eq!(
            check(s2, r#"{"s":"e😀"}"#),
            Err("Length of param: s must be <= 2".into())
        );
    }

    #[test]
    fn javascript_corners() {
        let x = json!({"x": {"type": "string"}});
        assert_eq!(
            check(x.clone(), r#"{"b":1,"a":1}"#),
            Err("Unexpected param: b".into())
        );
        assert_eq!(
            check(x.clone(), r#"{"b":1,"10":1,"9":1}"#),
            Err("Unexpected param: 9".into())
        );
        assert_eq!(check(x.clone(), "[]"), Ok(()));
        assert_eq!(check(x.clone(), "[5]"), Err("Unexpected param: 0".into()));
        assert_eq!(check(x, "null"), Ok(()));
        // `.` is one UTF-16 unit without the `u` flag: "😀" is two.
        let dot = json!({"s": {"type": "string", "pattern": "^.$"}});
        assert!(check(dot.clone(), r#"{"s":"😀"}"#).is_err());
        assert_eq!(check(dot, r#"{"s":"é"}"#), Ok(()));
        let n = json!({"n": {"type": "number", "enum": [1.5, 2]}});
        assert_eq!(
            check(n, r#"{"n":3}"#),
            Err("Invalid value for param: n, expected one of [1.5,2]".into())
        );
        let int = json!({"i": {"type": "integer"}});
        assert!(check(int.clone(), r#"{"i":1}"#).is_err());
        assert_eq!(check(int, "{}"), Ok(()), "absent: nothing to check");
        let d = json!({"d": {"type": "number", "default": "x"}});
        assert_eq!(
            check(d, "{}"),
            Err("Invalid type for param: d, expected number".into())
        );
        assert_eq!(js_number(1e21), "1e+21");
        assert_eq!(js_number(1e-7), "1e-7");
        assert_eq!(js_number(0.5), "0.5");
        assert_eq!(js_number(-3.0), "-3");
    }
}
