//! A function's published `params` schema, checked the way an Andera Worker checks
//! a task's `input` (protocol §5, worker-core 0.1.3), so that the load balancer can
//! give the Worker's own answer without taking a slot.
//!
//! A false refusal breaks a client; a missed one only costs a slot. So a schema is
//! compiled only when it is well formed ([`Schema::compile`]), and a check that
//! cannot be sure of the Worker's message (the first of several failing params,
//! whose schema order is not kept here; a `pattern` test that could be slow or
//! meets characters beyond U+FFFF) says [`Verdict::Unsure`]: forward.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::pattern::Pattern;

/// Names a JS object inherits from `Object.prototype`: as input keys they pass the
/// Worker's unknown-key check and are dropped.
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

/// Largest integer printed the same by JS and Rust (2^53).
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// What the Worker would do with a task's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The input passes: the task goes on.
    Pass,
    /// The Worker would answer `500 {"success":false,"error": message}`.
    Refuse(String),
    /// The answer cannot be told for sure: forward the task.
    Unsure,
}

/// A parameter's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    String,
    Number,
    Boolean,
    Object,
    Array,
}

impl Type {
    fn parse(name: &str) -> Option<Type> {
        Some(match name {
            "string" => Type::String,
            "number" => Type::Number,
            "boolean" => Type::Boolean,
            "object" => Type::Object,
            "array" => Type::Array,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Number => "number",
            Type::Boolean => "boolean",
            Type::Object => "object",
            Type::Array => "array",
        }
    }

    /// JS `typeof` / `Array.isArray`; `null` fails every type.
    fn admits(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (Type::String, Value::String(_))
                | (Type::Number, Value::Number(_))
                | (Type::Boolean, Value::Bool(_))
                | (Type::Object, Value::Object(_))
                | (Type::Array, Value::Array(_))
        )
    }
}

/// One compiled parameter.
#[derive(Debug, Clone)]
struct Param {
    key: String,
    ty: Type,
    required: bool,
    default: Option<Value>,
    /// The members, and their `JSON.stringify` for the message.
    one_of: Option<(Vec<Value>, String)>,
    /// A truthy `pattern`: its source (for the message) and compiled form.
    pattern: Option<(String, Pattern)>,
    min: Option<f64>,
    max: Option<f64>,
}

/// A well-formed `params` schema, compiled once when discovery brings it.
#[derive(Debug, Clone)]
pub struct Schema {
    params: Vec<Param>,
}

/// A number as JS prints it, when Rust prints it the same; `None` otherwise.
fn js_number(x: f64) -> Option<String> {
    if !x.is_finite() {
        return None;
    }
    if x.fract() == 0.0 && x.abs() <= EXACT_INTEGER {
        // -0 prints as 0 in JS.
        return Some(format!("{}", x as i64));
    }
    (x.fract() != 0.0 && x.abs() >= 1e-6 && x.abs() < 1e21).then(|| format!("{x}"))
}

/// `JSON.stringify` of an `enum` of scalars; `None` where JS could print it otherwise.
fn enum_json(members: &[Value]) -> Option<String> {
    let mut out = String::from("[");
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match m {
            Value::String(s) if !s.chars().any(char::is_control) => {
                out.push_str(&serde_json::to_string(s).ok()?);
            }
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&js_number(n.as_f64()?)?),
            _ => return None,
        }
    }
    out.push(']');
    Some(out)
}

/// A finite number bound, or `None` for a schema that is not well formed.
fn bound(spec: &Map<String, Value>, name: &str) -> Result<Option<f64>, ()> {
    match spec.get(name) {
        None => Ok(None),
        Some(v) => {
            let x = v.as_f64().ok_or(())?;
            js_number(x).ok_or(())?;
            Ok(Some(x))
        }
    }
}

impl Param {
    fn compile(key: &str, spec: &Value) -> Option<Param> {
        let spec = spec.as_object()?;
        if PROTOTYPE_KEYS.contains(&key) {
            return None;
        }
        let ty = Type::parse(spec.get("type")?.as_str()?)?;
        let required = match spec.get("required") {
            None => false,
            Some(v) => v.as_bool()?,
        };
        let default = match spec.get("default") {
            None => None,
            Some(Value::Null) => return None,
            Some(v) => Some(v.clone()),
        };
        let one_of = match spec.get("enum") {
            None => None,
            Some(Value::Array(members)) => Some((members.clone(), enum_json(members)?)),
            Some(_) => return None,
        };
        let pattern = match spec.get("pattern") {
            // A falsy pattern is not checked.
            None => None,
            Some(Value::String(p)) if p.is_empty() => None,
            Some(Value::String(p)) => Some((p.clone(), Pattern::compile(p)?)),
            Some(_) => return None,
        };
        Some(Param {
            key: key.to_string(),
            ty,
            required,
            default,
            one_of,
            pattern,
            min: bound(spec, "min").ok()?,
            max: bound(spec, "max").ok()?,
        })
    }

    /// How `value` of this param fares: `Pass`, the Worker's message, or `Unsure`
    /// (a `pattern` test that cannot be told surely).
    fn judge(&self, value: &Value) -> Verdict {
        let key = &self.key;
        if !self.ty.admits(value) {
            return Verdict::Refuse(format!(
                "Invalid type for param: {key}, expected {}",
                self.ty.name()
            ));
        }
        if let Some((members, json)) = &self.one_of {
            if !members.iter().any(|m| same_value_zero(m, value)) {
                return Verdict::Refuse(format!(
                    "Invalid value for param: {key}, expected one of {json}"
                ));
            }
        }
        if let (Some((source, pattern)), Value::String(s)) = (&self.pattern, value) {
            match pattern.test(s) {
                Some(true) => {}
                Some(false) => {
                    return Verdict::Refuse(format!(
                        "Invalid format for param: {key}, does not match pattern {source}"
                    ))
                }
                None => return Verdict::Unsure,
            }
        }
        let (measure, what) = match value {
            Value::Number(n) => match n.as_f64() {
                Some(x) => (x, "Value for"),
                None => return Verdict::Unsure,
            },
            Value::String(s) => (s.encode_utf16().count() as f64, "Length of"),
            Value::Array(a) => (a.len() as f64, "Length of"),
            _ => return Verdict::Pass,
        };
        let shown = |x: f64| js_number(x).unwrap_or_default();
        match (self.min, self.max) {
            (Some(min), _) if measure < min => {
                Verdict::Refuse(format!("{what} param: {key} must be >= {}", shown(min)))
            }
            (_, Some(max)) if measure > max => {
                Verdict::Refuse(format!("{what} param: {key} must be <= {}", shown(max)))
            }
            _ => Verdict::Pass,
        }
    }

    /// How the default fares when the param is absent. Only its type check is
    /// stated by the protocol: another failure of a default is `Unsure`.
    fn judge_default(&self) -> Verdict {
        let Some(default) = &self.default else {
            return Verdict::Pass;
        };
        if !self.ty.admits(default) {
            return self.judge(default);
        }
        match self.judge(default) {
            Verdict::Pass => Verdict::Pass,
            _ => Verdict::Unsure,
        }
    }
}

/// JS SameValueZero for a scalar `enum` member against a value (objects never match).
fn same_value_zero(member: &Value, value: &Value) -> bool {
    match (member, value) {
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => false,
    }
}

/// A canonical array index ("0", "17"): JS lists such keys first, ascending.
fn array_index(key: &str) -> Option<u32> {
    let n: u32 = key.parse().ok()?;
    (n < u32::MAX && n.to_string() == key).then_some(n)
}

impl Schema {
    /// Compiles a function's published `params`; `None` when it is absent or not
    /// well formed (a type outside the five, a non-boolean `required`, an `enum`
    /// that is not an array of scalars, a bound that is not a number, a `pattern`),
    /// and then the load balancer forwards without checking.
    pub fn compile(params: Option<&Value>) -> Option<Schema> {
        let params = params?.as_object()?;
        let params = params
            .iter()
            .map(|(key, spec)| Param::compile(key, spec))
            .collect::<Option<Vec<_>>>()?;
        Some(Schema { params })
    }

    /// What the Worker would answer for a task whose `input` is `input`, a parsed
    /// JSON value (whose object keys are sorted, not in the client's order: where
    /// that order decides, the answer is `Unsure`).
    pub fn check(&self, input: Option<&Value>) -> Verdict {
        let members: Vec<(String, Value)> = match input {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.is_empty() => Vec::new(),
            Some(Value::Array(_)) => return self.unexpected_index(),
            Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            // Not an object: the Worker refuses it with 400 before queueing.
            Some(_) => return Verdict::Pass,
        };
        self.check_members(&members, false)
    }

    /// What the Worker would answer for a task whose `input` member is the JSON text
    /// `input` (`None`: absent), read in the client's key order as `JSON.parse`
    /// does (a repeated key keeps its first place and its last value).
    pub fn check_json(&self, input: Option<&str>) -> Verdict {
        let Some(text) = input else {
            return self.check_members(&[], true);
        };
        match serde_json::from_str::<Input>(text) {
            Ok(Input::Object(members)) => self.check_members(&members, true),
            Ok(Input::Other(v)) => self.check(Some(&v)),
            // Numbers beyond f64, lone surrogates: not what serde reads; forward.
            Err(_) => Verdict::Unsure,
        }
    }

    /// The checks on the input's own members; `ordered` when they are in the
    /// client's order.
    fn check_members(&self, input: &[(String, Value)], ordered: bool) -> Verdict {
        if let Some(verdict) = self.unexpected(input, ordered) {
            return verdict;
        }
        let mut failures = self.params.iter().filter_map(|p| {
            let verdict = match input.iter().find(|(k, _)| *k == p.key) {
                Some((_, v)) => p.judge(v),
                None if p.required => Verdict::Refuse(format!("Missing required param: {}", p.key)),
                None => p.judge_default(),
            };
            (verdict != Verdict::Pass).then_some(verdict)
        });
        match (failures.next(), failures.next()) {
            (None, _) => Verdict::Pass,
            (Some(verdict), None) => verdict,
            // The Worker reports the first in schema order, which is not kept here.
            (Some(_), Some(_)) => Verdict::Unsure,
        }
    }

    /// A non-empty array input: its first key is `0`.
    fn unexpected_index(&self) -> Verdict {
        if self.params.iter().any(|p| array_index(&p.key).is_some()) {
            return Verdict::Unsure;
        }
        Verdict::Refuse("Unexpected param: 0".into())
    }

    /// The refusal for input keys outside the schema, if any: the first in JS key
    /// order (array indexes ascending, then the others in the client's order), when
    /// it can be told.
    fn unexpected(&self, input: &[(String, Value)], ordered: bool) -> Option<Verdict> {
        let unknown: Vec<&String> = input
            .iter()
            .map(|(k, _)| k)
            .filter(|k| {
                !PROTOTYPE_KEYS.contains(&k.as_str()) && !self.params.iter().any(|p| &p.key == *k)
            })
            .collect();
        let first = *unknown.first()?;
        let lowest_index = unknown
            .iter()
            .filter_map(|k| array_index(k).map(|n| (n, *k)))
            .min();
        let key = match lowest_index {
            Some((_, k)) => k,
            None if ordered || unknown.len() == 1 => first,
            // Insertion order decides, and it is not kept here.
            None => return Some(Verdict::Unsure),
        };
        Some(Verdict::Refuse(format!("Unexpected param: {key}")))
    }
}

/// A task's `input` as `JSON.parse` reads it: an object's members in first-seen
/// order with their last value, or any other value.
enum Input {
    Object(Vec<(String, Value)>),
    Other(Value),
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Input;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Input, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                // Where each key was first seen: a body of many keys stays linear.
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
                Ok(Input::Object(out))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Input, A::Error> {
                let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Input::Other(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Input, E> {
                Ok(Input::Other(Value::Null))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Input, E> {
                Ok(Input::Other(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Input, E> {
                Ok(Input::Other(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Input, E> {
                Ok(Input::Other(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Input, E> {
                Ok(Input::Other(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Input, E> {
                Ok(Input::Other(Value::String(v.into())))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verdict(schema: Value, input: Value) -> Verdict {
        let schema = Schema::compile(Some(&schema)).expect("well formed");
        schema.check(Some(&input))
    }

    /// Protocol §5's test vectors, as a live worker-core 0.1.3 answered them.
    #[test]
    fn the_protocols_test_vectors_answer_as_the_worker() {
        let refuse = |m: &str| Verdict::Refuse(m.to_string());
        let ms = json!({"ms": {"type": "number", "required": true, "min": 0, "max": 600000}});
        let slen = json!({"s": {"type": "string", "min": 2, "max": 5}});
        let e = json!({"e": {"type": "string", "enum": ["a", "b"]}});
        let x = json!({"x": {"type": "string"}});
        let r = json!({"r": {"type": "string", "required": true}});
        let s2 = json!({"s": {"type": "string", "max": 2}});
        let cases = [
            (&ms, json!({}), refuse("Missing required param: ms")),
            (
                &ms,
                json!({"ms": "100"}),
                refuse("Invalid type for param: ms, expected number"),
            ),
            (
                &ms,
                json!({"ms": 600001}),
                refuse("Value for param: ms must be <= 600000"),
            ),
            (&ms, json!({"ms": 100}), Verdict::Pass),
            (
                &slen,
                json!({"s": "a"}),
                refuse("Length of param: s must be >= 2"),
            ),
            (
                &e,
                json!({"e": "c"}),
                refuse(r#"Invalid value for param: e, expected one of ["a","b"]"#),
            ),
            (&e, json!({"e": "b"}), Verdict::Pass),
            (
                &x,
                json!({"x": null}),
                refuse("Invalid type for param: x, expected string"),
            ),
            (&x, json!({"constructor": 1}), Verdict::Pass),
            (&r, json!({"zz": 1}), refuse("Unexpected param: zz")),
            (
                &s2,
                json!({"s": "e😀"}),
                refuse("Length of param: s must be <= 2"),
            ),
            (&s2, json!({"s": "😀"}), Verdict::Pass),
        ];
        for (schema, input, want) in cases {
            assert_eq!(
                verdict(schema.clone(), input.clone()),
                want,
                "{schema} {input}"
            );
        }
    }

    #[test]
    fn a_pattern_is_tested_as_javascript_would() {
        let p = json!({"s": {"type": "string", "pattern": "^[a-z]+$", "min": 2, "max": 5}});
        assert_eq!(
            verdict(p.clone(), json!({"s": "aBc"})),
            Verdict::Refuse("Invalid format for param: s, does not match pattern ^[a-z]+$".into())
        );
        assert_eq!(
            verdict(p.clone(), json!({"s": "a"})),
            Verdict::Refuse("Length of param: s must be >= 2".into()),
            "the pattern passes, then the length fails"
        );
        assert_eq!(verdict(p, json!({"s": "abc"})), Verdict::Pass);
        let anywhere = json!({"s": {"type": "string", "pattern": "abc"}});
        assert_eq!(
            verdict(anywhere.clone(), json!({"s": "xxabcxx"})),
            Verdict::Pass
        );
        assert_eq!(
            verdict(anywhere, json!({"s": 5})),
            Verdict::Refuse("Invalid type for param: s, expected string".into())
        );
        let empty = json!({"s": {"type": "string", "pattern": ""}});
        assert_eq!(verdict(empty, json!({"s": "x"})), Verdict::Pass);
        // Only strings are tested: a number passes a pattern.
        let n = json!({"n": {"type": "number", "pattern": "^x$"}});
        assert_eq!(verdict(n, json!({"n": 5})), Verdict::Pass);
        // A string beyond the BMP: JavaScript matches UTF-16 units, forward.
        let dot = json!({"s": {"type": "string", "pattern": "^.$"}});
        assert_eq!(verdict(dot, json!({"s": "😀"})), Verdict::Unsure);
        for bad in [json!("(a+)+"), json!("a{"), json!(5), json!(true)] {
            let schema = json!({"s": {"type": "string", "pattern": bad}});
            assert!(Schema::compile(Some(&schema)).is_none(), "{schema}");
        }
    }

    #[test]
    fn the_clients_key_order_decides_the_first_unexpected_key() {
        let x = Schema::compile(Some(&json!({"x": {"type": "string"}}))).unwrap();
        let first = |text: &str| x.check_json(Some(text));
        assert_eq!(
            first(r#"{"b":1,"a":1}"#),
            Verdict::Refuse("Unexpected param: b".into())
        );
        assert_eq!(
            first(r#"{"a":1,"b":1,"a":2}"#),
            Verdict::Refuse("Unexpected param: a".into()),
            "a repeated key keeps its first place"
        );
        assert_eq!(
            first(r#"{"b":1,"7":1,"3":1}"#),
            Verdict::Refuse("Unexpected param: 3".into()),
            "array indexes first, ascending"
        );
        assert_eq!(
            first(r#"{"x":"a","x":5}"#),
            Verdict::Refuse("Invalid type for param: x, expected string".into()),
            "the last value counts"
        );
        assert_eq!(first(r#"{"__proto__":1,"valueOf":2}"#), Verdict::Pass);
        assert_eq!(first("null"), Verdict::Pass);
        assert_eq!(x.check_json(None), Verdict::Pass);
        // A lone surrogate is a JS string but no Rust one: forward.
        assert_eq!(first(r#"{"x":"\ud800"}"#), Verdict::Unsure);
        assert_eq!(
            first(r#"{"x":1e400}"#),
            Verdict::Unsure,
            "not an f64: forward"
        );
    }

    #[test]
    fn only_well_formed_schemas_are_checked() {
        for bad in [
            json!({"a": {"type": "integer"}}),
            json!({"a": {"required": true}}),
            json!({"a": {"type": "string", "required": "yes"}}),
            json!({"a": {"type": "string", "enum": [{"x": 1}]}}),
            json!({"a": {"type": "string", "enum": "a"}}),
            json!({"a": {"type": "number", "min": "0"}}),
            json!({"a": {"type": "number", "max": 1e300}}),
            json!({"a": {"type": "string", "default": null}}),
            json!({"toString": {"type": "string"}}),
            json!({"a": "string"}),
            json!([]),
        ] {
            assert!(Schema::compile(Some(&bad)).is_none(), "{bad}");
        }
        assert!(Schema::compile(None).is_none(), "no params: forwarded");
        let extra = json!({"a": {"type": "string", "description": "ignored"}});
        assert!(Schema::compile(Some(&extra)).is_some());
    }

    #[test]
    fn js_semantics_where_they_matter() {
        let n = json!({"n": {"type": "number", "enum": [1, 2]}});
        assert_eq!(verdict(n.clone(), json!({"n": 1.0})), Verdict::Pass);
        assert_eq!(
            verdict(n, json!({"n": 3})),
            Verdict::Refuse("Invalid value for param: n, expected one of [1,2]".into())
        );
        let b = json!({"b": {"type": "boolean", "min": 5}});
        assert_eq!(
            verdict(b, json!({"b": true})),
            Verdict::Pass,
            "bounds ignore booleans"
        );
        let o = json!({"o": {"type": "object"}});
        assert!(matches!(
            verdict(o.clone(), json!({"o": []})),
            Verdict::Refuse(_)
        ));
        assert_eq!(verdict(o, json!({"o": {}})), Verdict::Pass);
        let d = json!({"d": {"type": "number", "default": "x"}});
        assert_eq!(
            verdict(d.clone(), json!({})),
            Verdict::Refuse("Invalid type for param: d, expected number".into()),
            "the default is type-checked"
        );
        let req = json!({"q": {"type": "number", "required": true, "default": 1}});
        assert_eq!(
            verdict(req, json!({})),
            Verdict::Refuse("Missing required param: q".into()),
            "required wins over a default"
        );
        let min0 = json!({"m": {"type": "number", "min": 0}});
        assert_eq!(
            verdict(min0, json!({"m": -1})),
            Verdict::Refuse("Value for param: m must be >= 0".into())
        );
    }

    #[test]
    fn input_shapes_and_key_order() {
        let x = json!({"x": {"type": "string"}});
        let s = Schema::compile(Some(&x)).unwrap();
        assert_eq!(s.check(None), Verdict::Pass);
        assert_eq!(s.check(Some(&json!(null))), Verdict::Pass);
        assert_eq!(s.check(Some(&json!([]))), Verdict::Pass);
        assert_eq!(
            s.check(Some(&json!([1]))),
            Verdict::Refuse("Unexpected param: 0".into())
        );
        assert_eq!(
            s.check(Some(&json!("text"))),
            Verdict::Pass,
            "the Worker's 400"
        );
        // Integer-like keys come first in JS, ascending.
        assert_eq!(
            s.check(Some(&json!({"b": 1, "10": 1, "2": 1}))),
            Verdict::Refuse("Unexpected param: 2".into())
        );
        // Two unknown names: insertion order decides, not kept in a JSON map here.
        assert_eq!(s.check(Some(&json!({"b": 1, "a": 1}))), Verdict::Unsure);
        // Two failing params: the first in schema order, not kept either.
        let two = json!({"a": {"type": "string"}, "b": {"type": "string"}});
        assert_eq!(verdict(two, json!({"a": 1, "b": 2})), Verdict::Unsure);
    }
}
