//! Input checked at the edge (#23, README "Task control"): against the real binary
//! and simulated Workers that validate as protocol §5 says, a sync task whose input
//! fails its function's published params gets the Worker's own answer at once, and
//! the Worker never sees it; the check is off with `tasks.validate_input: false`,
//! skips webhook tasks, and follows the pool's valid Workers when the list changes.
//! A property test compares the schema module's verdicts with the simulator's own
//! validation over random schemas and inputs, in-process and (a sample) end to end.

mod common;

use std::time::Duration;

use andera_lb::task::schema::{Schema, Verdict};
use andera_worker_sim::{validate_input, SimWorker};
use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use serde_json::{json, Map, Value};

/// The functions of §5's test vectors.
fn vector_functions() -> Vec<(String, Value)> {
    [
        (
            "ms",
            json!({"ms": {"type": "number", "required": true, "min": 0, "max": 600000}}),
        ),
        ("abc", json!({"s": {"type": "string", "pattern": "abc"}})),
        (
            "lower",
            json!({"s": {"type": "string", "pattern": "^[a-z]+$", "min": 2, "max": 5}}),
        ),
        ("e", json!({"e": {"type": "string", "enum": ["a", "b"]}})),
        ("x", json!({"x": {"type": "string"}})),
        ("r", json!({"r": {"type": "string", "required": true}})),
        ("s2", json!({"s": {"type": "string", "max": 2}})),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_string(), p))
    .collect()
}

/// A task body for `function` whose `input` is the JSON text `input`.
fn body(function: &str, input: &str) -> String {
    format!(r#"{{"group":"default","function":"{function}","contract":1,"input":{input}}}"#)
}

/// What the Worker answers when sent the task directly: status and JSON body.
async fn direct(w: &SimWorker, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/task", w.url()))
        .header("x-lb-auth", LB_KEY)
        .header("authorization", WK_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The answer through the load balancer: status, `x-andera-reason`, raw body.
async fn through(lb: &Lb, body: &str) -> (u16, Option<String>, String) {
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", LB_KEY)
        .header("x-wr-auth", WK_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let reason = r
        .headers()
        .get("x-andera-reason")
        .map(|v| v.to_str().unwrap().to_string());
    (status, reason, r.text().await.unwrap())
}

/// The value of a series in the admin port's `/metrics` (it must be there).
async fn scraped(lb: &Lb, series: &str) -> f64 {
    let text = lb.scrape().await;
    metric(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn the_protocols_test_vectors_are_answered_at_the_edge_as_the_worker_answers_them() {
    let w = sim(|c| {
        c.slots = 1;
        c.custom_functions = vector_functions();
    })
    .await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let refused_at_first = r#"andera_lb_input_refused_total{group="default"}"#;
    assert_eq!(
        scraped(&lb, refused_at_first).await,
        0.0,
        "at 0 from the start"
    );
    let vectors: &[(&str, &str, Option<&str>)] = &[
        ("ms", "{}", Some("Missing required param: ms")),
        (
            "ms",
            r#"{"ms":"100"}"#,
            Some("Invalid type for param: ms, expected number"),
        ),
        (
            "ms",
            r#"{"ms":600001}"#,
            Some("Value for param: ms must be <= 600000"),
        ),
        ("abc", r#"{"s":"xxabcxx"}"#, None),
        (
            "lower",
            r#"{"s":"aBc"}"#,
            Some("Invalid format for param: s, does not match pattern ^[a-z]+$"),
        ),
        (
            "lower",
            r#"{"s":"a"}"#,
            Some("Length of param: s must be >= 2"),
        ),
        (
            "e",
            r#"{"e":"c"}"#,
            Some(r#"Invalid value for param: e, expected one of ["a","b"]"#),
        ),
        (
            "x",
            r#"{"x":null}"#,
            Some("Invalid type for param: x, expected string"),
        ),
        ("x", r#"{"constructor":1}"#, None),
        ("r", r#"{"zz":1}"#, Some("Unexpected param: zz")),
        (
            "s2",
            r#"{"s":"e😀"}"#,
            Some("Length of param: s must be <= 2"),
        ),
    ];
    let mut refused = 0.0;
    for (function, input, want) in vectors {
        let task = body(function, input);
        let before = w.stats().requests;
        let (status, reason, text) = through(&lb, &task).await;
        let after = w.stats().requests;
        // What the Worker itself answers, for the same task sent to it directly.
        let (worker_status, worker_body) = direct(&w, &task).await;
        match want {
            Some(message) => {
                refused += 1.0;
                let exact = format!(r#"{{"success":false,"error":{}}}"#, json!(message));
                assert_eq!((status, text.as_str()), (500, exact.as_str()), "{task}");
                assert_eq!(reason.as_deref(), Some("bad_request"), "{task}");
                assert_eq!(after, before, "the Worker never saw {task}");
                let edge: Value = serde_json::from_str(&text).unwrap();
                assert_eq!((worker_status, worker_body), (500, edge), "{task}");
            }
            None => {
                assert_eq!((status, reason), (200, None), "{task}: {text}");
                assert_eq!(after, before + 1, "{task} reached the Worker");
                assert_eq!(worker_status, 200, "{task}");
            }
        }
    }
    assert_eq!(scraped(&lb, refused_at_first).await, refused);
    let tasks = r#"andera_lb_tasks_total{function="ms",group="default",outcome="input_refused"}"#;
    assert_eq!(
        scraped(&lb, tasks).await,
        3.0,
        "closed as tasks, with their outcome"
    );
    // A webhook task is accepted by the Worker before it checks the input: forwarded.
    let mut hook: Value = serde_json::from_str(&body("r", r#"{"zz":1}"#)).unwrap();
    hook["mode"] = json!("webhook");
    hook["webhook"] = json!({"url": "http://127.0.0.1:9/hook"});
    let before = w.stats().requests;
    let (status, reason, _) = through(&lb, &hook.to_string()).await;
    assert_eq!((status, reason), (200, None));
    wait_for(
        "the webhook task reaches the Worker",
        Duration::from_secs(10),
        || w.stats().requests == before + 1,
    )
    .await;
    w.shutdown().await;
}

#[tokio::test]
async fn with_validate_input_false_the_worker_answers_itself() {
    let w = sim(|c| c.custom_functions = vector_functions()).await;
    let lb = Lb::start_with(&[w.url()], &[], "tasks:\n  validate_input: false\n").await;
    lb.wait_available(1).await;
    let task = body("r", r#"{"zz":1}"#);
    let before = w.stats().requests;
    let (status, reason, text) = through(&lb, &task).await;
    assert_eq!(
        (status, reason),
        (500, None),
        "relayed from the Worker: {text}"
    );
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        got,
        json!({"success": false, "error": "Unexpected param: zz"})
    );
    assert_eq!(w.stats().requests, before + 1);
    w.shutdown().await;
}

#[tokio::test]
async fn only_the_schema_of_the_pools_valid_workers_counts_and_it_follows_the_list() {
    // Two Workers of one group publish different schemas for `f`: the second in the
    // list conflicts with the first (protocol §3) and is never chosen.
    let strict = json!({"s": {"type": "string", "max": 2}});
    let loose = json!({"s": {"type": "string", "max": 5}});
    let a = sim(|c| c.custom_functions = vec![("f".into(), strict.clone())]).await;
    let b = sim(|c| c.custom_functions = vec![("f".into(), loose.clone())]).await;
    let lb = Lb::start(&[a.url(), b.url()], &[]).await;
    lb.wait_until(
        |h| h["invalidWorkers"].as_array().is_some_and(|i| i.len() == 1),
        "the second Worker is invalid",
    )
    .await;
    let task = body("f", r#"{"s":"abcd"}"#);
    let (status, reason, text) = through(&lb, &task).await;
    assert_eq!(
        (status, reason.as_deref()),
        (500, Some("bad_request")),
        "{text}"
    );
    assert!(text.contains("Length of param: s must be <= 2"), "{text}");
    assert_eq!(a.stats().requests + b.stats().requests, 0);
    // Without the first Worker, the second is the pool's reference and valid: its
    // schema, which this input passes, is the one checked.
    std::fs::write(lb.workers_file(), json!([b.url()]).to_string()).unwrap();
    lb.wait_until(
        |h| {
            h["workers"].as_array().is_some_and(|w| w.len() == 1)
                && h["invalidWorkers"].as_array().is_some_and(|i| i.is_empty())
        },
        "only the second Worker, valid",
    )
    .await;
    lb.wait_available(1).await;
    let (status, reason, text) = through(&lb, &task).await;
    assert_eq!((status, reason), (200, None), "{text}");
    assert_eq!(b.stats().requests, 1);
    a.shutdown().await;
    b.shutdown().await;
}

/// A random schema of one to three params, with every published key in play:
/// well formed or not (a type outside the five, a non-array enum, a pattern
/// outside the compiled subset), so both verdicts and forwarding happen.
fn schema_strategy() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec!["a", "b", "s", "1", "10"]);
    let ty = prop::sample::select(vec![
        "string", "string", "number", "boolean", "object", "array", "integer",
    ]);
    let pattern = prop::sample::select(vec![
        "abc",
        "^[a-z]+$",
        r"^\d{2,3}$",
        "colou?r",
        "^.$",
        "a|b",
        "(ab)+",
        "[^x]",
        r"\w+@\w+",
        "",
        "a{",
        "(a+)+",
    ]);
    let spec = (
        ty,
        prop::option::of(any::<bool>()),
        prop::option::of(value_strategy()),
        prop::option::of(prop::collection::vec(scalar_strategy(), 0..3)),
        prop::option::of(pattern),
        prop::option::of(0u8..6),
        prop::option::of(0u8..8),
    )
        .prop_map(|(ty, required, default, one_of, pattern, min, max)| {
            let mut m = Map::new();
            m.insert("type".into(), json!(ty));
            if let Some(r) = required {
                m.insert("required".into(), json!(r));
            }
            if let Some(d) = default {
                m.insert("default".into(), d);
            }
            if let Some(e) = one_of {
                m.insert("enum".into(), Value::Array(e));
            }
            if let Some(p) = pattern {
                m.insert("pattern".into(), json!(p));
            }
            if let Some(x) = min {
                m.insert("min".into(), json!(x));
            }
            if let Some(x) = max {
                m.insert("max".into(), json!(x));
            }
            Value::Object(m)
        });
    prop::collection::vec((key, spec), 1..4).prop_map(|params| {
        Value::Object(
            params
                .into_iter()
                .map(|(k, s)| (k.to_string(), s))
                .collect(),
        )
    })
}

fn scalar_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec!["", "a", "b", "abc", "aBc", "12", "colour"])
            .prop_map(|s| json!(s)),
        prop::sample::select(vec![-1.0, 0.0, 1.0, 2.5, 5.0, 600001.0]).prop_map(|n| json!(n)),
        any::<bool>().prop_map(|b| json!(b)),
    ]
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar_strategy(),
        1 => prop::sample::select(vec!["😀", "é", "xxabcxx", "a@b", "e😀", "toolong"]).prop_map(|s| json!(s)),
        1 => Just(Value::Null),
        1 => prop::sample::select(vec![json!([]), json!([1, 2]), json!({}), json!({"k": 1})]),
    ]
}

/// An input object's JSON text, its members in the generated order (repeats kept):
/// the key order a client sends decides which unexpected key a Worker names.
fn input_strategy() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "a",
        "b",
        "s",
        "1",
        "10",
        "zz",
        "9",
        "toString",
        "__proto__",
    ]);
    prop::collection::vec((key, value_strategy()), 0..4).prop_map(|members| {
        let inner: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("{}:{v}", json!(k)))
            .collect();
        format!("{{{}}}", inner.join(","))
    })
}

/// The schema module's verdict against the simulator's own validation: a `Pass`
/// must be the Worker's pass, a `Refuse` its very message; `Unsure` forwards.
fn agrees(params: &Value, input: &str) -> Result<Option<bool>, String> {
    let worker = validate_input(params.as_object().unwrap(), Some(input));
    let Some(schema) = Schema::compile(Some(params)) else {
        return Ok(None);
    };
    match (schema.check_json(Some(input)), worker) {
        (Verdict::Unsure, _) => Ok(None),
        (Verdict::Pass, Ok(())) => Ok(Some(false)),
        (Verdict::Refuse(m), Err(w)) if m == w => Ok(Some(true)),
        (verdict, worker) => Err(format!(
            "params {params} input {input}: edge {verdict:?}, Worker {worker:?}"
        )),
    }
}

#[test]
fn the_edge_verdict_is_the_workers_own_over_random_schemas_and_inputs() {
    let mut runner = TestRunner::new(Config {
        cases: 4000,
        ..Config::default()
    });
    let counts = std::cell::Cell::new((0u32, 0u32));
    runner
        .run(&(schema_strategy(), input_strategy()), |(params, input)| {
            let verdict = agrees(&params, &input).map_err(TestCaseError::fail)?;
            let (refused, passed) = counts.get();
            match verdict {
                Some(true) => counts.set((refused + 1, passed)),
                Some(false) => counts.set((refused, passed + 1)),
                None => {}
            }
            Ok(())
        })
        .unwrap();
    // A property that only ever forwarded would prove nothing.
    let (refused, passed) = counts.get();
    assert!(
        refused > 200 && passed > 200,
        "refused {refused}, passed {passed}"
    );
}

#[tokio::test]
async fn a_random_sample_end_to_end_answers_as_the_worker() {
    // Fixed seed: the same sample every run.
    let mut rng = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let schemas: Vec<Value> = (0..16)
        .map(|_| schema_strategy().new_tree(&mut rng).unwrap().current())
        .collect();
    let functions: Vec<(String, Value)> = schemas
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("f{i}"), p.clone()))
        .collect();
    let w = sim(|c| c.custom_functions = functions.clone()).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let mut refused = 0;
    for (name, _) in &functions {
        for _ in 0..6 {
            let input = input_strategy().new_tree(&mut rng).unwrap().current();
            let task = body(name, &input);
            let before = w.stats().requests;
            let (status, reason, text) = through(&lb, &task).await;
            let reached = w.stats().requests - before;
            let (worker_status, worker_body) = direct(&w, &task).await;
            let got: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert_eq!((status, &got), (worker_status, &worker_body), "{task}");
            if reason.is_some() {
                refused += 1;
                assert_eq!(reached, 0, "refused at the edge, yet sent: {task}");
            } else {
                assert_eq!(reached, 1, "{task}");
            }
        }
    }
    assert!(refused > 0, "no refusal at the edge in the sample");
    w.shutdown().await;
}
