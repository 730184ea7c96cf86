//! Observability as shipped: the metrics reference (`docs/metrics.md`), the Grafana
//! dashboard and the Prometheus alert rules, each checked against a live scrape of
//! the real binary that ran a few tasks (a success, a function's `500`, a Worker's
//! `401` and an unknown group).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use serde_json::{json, Value};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One family of a scrape: its type, label names and values, and its samples.
#[derive(Default, Debug)]
struct Family {
    kind: String,
    labels: BTreeMap<String, BTreeSet<String>>,
    samples: Vec<(BTreeMap<String, String>, f64)>,
}

/// `name{a="x",b="y"} 1` as (name, labels, value).
fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let (series, value) = line.rsplit_once(' ').expect("a value");
    let value = value.parse().unwrap_or(f64::NAN);
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_string(), BTreeMap::new(), value);
    };
    let mut labels = BTreeMap::new();
    let mut rest = rest.trim_end_matches('}');
    while let Some((key, tail)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = tail.char_indices();
        let mut end = tail.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => val.extend(chars.next().map(|(_, c)| c)),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), val);
        rest = &tail[end..];
    }
    (name.to_string(), labels, value)
}

/// The scrape's families by name; histogram samples go to their family.
fn parse_scrape(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let (name, kind) = decl.split_once(' ').unwrap();
            families.entry(name.into()).or_default().kind = kind.into();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, labels, value) = parse_sample(line);
        let family = family_of(&families, &name).unwrap_or_else(|| panic!("no # TYPE for {line}"));
        let f = families.get_mut(&family).unwrap();
        for (k, v) in &labels {
            if k != "le" && k != "quantile" {
                f.labels.entry(k.clone()).or_default().insert(v.clone());
            }
        }
        f.samples.push((labels, value));
    }
    families
}

/// The family a metric name belongs to: itself, or a histogram's `_bucket`, `_sum`
/// or `_count`.
fn family_of(families: &BTreeMap<String, Family>, name: &str) -> Option<String> {
    if families.contains_key(name) {
        return Some(name.to_string());
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|base| families.get(*base).is_some_and(|f| f.kind == "histogram"))
        .map(str::to_string)
}

/// The value of the sample of `family` with exactly `labels` (histograms: `_count`).
fn value(families: &BTreeMap<String, Family>, family: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let f = families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    let mut found = f.samples.iter().filter(|(l, _)| *l == want);
    // A histogram's series are its buckets, then _sum, then _count: the last one.
    let v = found
        .next_back()
        .unwrap_or_else(|| panic!("no {family}{labels:?} in {:?}", f.samples));
    v.1
}

/// Starts a Worker and the load balancer with a task journal (so that the journal's
/// families exist), runs a success, a function's 500, a Worker's 401 and a task for
/// an unknown group, and returns the admin port's `/metrics`.
async fn live_scrape() -> (String, String) {
    let w = sim(|c| {
        c.cpu_load = 0.25;
        c.used_memory_percent = 40.0;
    })
    .await;
    let lb = Lb::start(&[w.url()], &[("TASK_JOURNAL", "tasks.db")]).await;
    lb.wait_available(1).await;
    // The journal opens in the background (its engine series appears then): sync
    // tasks do not wait for it, the scrape must.
    lb.wait_until(
        |h| h["components"]["journal"]["engine"] == json!("sqlite"),
        "the journal is open",
    )
    .await;
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
    assert_eq!(
        lb.run(task("fail", json!({"message": "boom"}))).await.0,
        500
    );
    let mut unknown = task("hello", json!({}));
    unknown["group"] = json!("no-such-group");
    assert_eq!(lb.run(unknown).await.0, 503);
    let refused = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", LB_KEY)
        .header("x-wr-auth", "not-the-worker-key")
        .json(&task("hello", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let r = lb.http.get(lb.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    (r.text().await.unwrap(), w.url())
}

/// The families table of docs/metrics.md: name → (type, label names).
fn documented_families(doc: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `andera_lb_")) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cols[1].trim_matches('`').to_string();
        let labels = cols[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty() && l != "—")
            .collect();
        assert!(
            out.insert(name.clone(), (cols[2].to_string(), labels))
                .is_none(),
            "{name} is documented twice"
        );
    }
    out
}

/// The "Values of `label`" tables of docs/metrics.md: label → values.
fn documented_values(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut label = None;
    for line in doc.lines() {
        if line.starts_with('#') {
            label = line
                .strip_prefix("### Values of `")
                .and_then(|l| l.strip_suffix('`'))
                .map(str::to_string);
        } else if let (Some(label), Some(cell)) = (&label, line.strip_prefix("| `")) {
            let value = cell.split('`').next().unwrap().to_string();
            out.entry(label.clone()).or_default().insert(value);
        }
    }
    out
}

#[tokio::test]
async fn the_metrics_reference_matches_a_live_scrape() {
    let (text, worker) = live_scrape().await;
    let scrape = parse_scrape(&text);
    let doc = read("docs/metrics.md");
    let documented = documented_families(&doc);

    let in_scrape: BTreeSet<&String> = scrape.keys().collect();
    let in_doc: BTreeSet<&String> = documented.keys().collect();
    let undocumented: Vec<_> = in_scrape.difference(&in_doc).collect();
    let missing: Vec<_> = in_doc.difference(&in_scrape).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "in the scrape but not in docs/metrics.md: {undocumented:?}; \
         documented but not in the scrape: {missing:?}\n{text}"
    );
    for (name, (kind, labels)) in &documented {
        let f = &scrape[name];
        assert_eq!(&f.kind, kind, "type of {name}");
        let live: BTreeSet<String> = f.labels.keys().cloned().collect();
        assert_eq!(&live, labels, "labels of {name}");
    }

    // Every listed label value exists (at 0 if nothing happened), and no other.
    let values = documented_values(&doc);
    for label in [
        "outcome",
        "reason",
        "state",
        "engine",
        "priority_class",
        "service",
        "route",
    ] {
        assert!(
            values.contains_key(label),
            "docs/metrics.md lists no values of {label}"
        );
    }
    for (label, listed) in &values {
        let live: BTreeSet<String> = scrape
            .values()
            .filter_map(|f| f.labels.get(label))
            .flatten()
            .cloned()
            .collect();
        let unlisted: Vec<_> = live.difference(listed).collect();
        assert!(
            unlisted.is_empty(),
            "{label} values not in docs/metrics.md: {unlisted:?}"
        );
        if ["outcome", "reason", "state", "service"].contains(&label.as_str()) {
            let absent: Vec<_> = listed.difference(&live).collect();
            assert!(
                absent.is_empty(),
                "{label} values not in the scrape: {absent:?}\n{text}"
            );
        }
    }

    // The tasks just run, with the Worker's 401 and the function's 500 told apart.
    let tasks = "andera_lb_tasks_total";
    let of = |function, outcome| {
        [
            ("group", "default"),
            ("function", function),
            ("outcome", outcome),
        ]
    };
    assert_eq!(value(&scrape, tasks, &of("hello", "ok")), 1.0);
    assert_eq!(value(&scrape, tasks, &of("fail", "function_error")), 1.0);
    assert_eq!(
        value(&scrape, tasks, &of("hello", "worker_key_rejected")),
        1.0
    );
    assert_eq!(value(&scrape, tasks, &of("fail", "worker_error")), 0.0);
    assert_eq!(value(&scrape, tasks, &of("echo", "timeout")), 0.0);
    let other = [
        ("group", "other"),
        ("function", "other"),
        ("outcome", "no_worker"),
    ];
    assert_eq!(value(&scrape, tasks, &other), 1.0);
    // Latency by function; the queue wait by group.
    let duration = "andera_lb_task_duration_seconds";
    assert_eq!(value(&scrape, duration, &of("fail", "function_error")), 1.0);
    let wait = [("group", "default"), ("priority_class", "1")];
    assert_eq!(value(&scrape, "andera_lb_queue_wait_seconds", &wait), 3.0);
    // What the Worker reports, per Worker.
    let w = [("worker", worker.as_str())];
    assert_eq!(
        value(&scrape, "andera_lb_worker_reported_cpu_load", &w),
        0.25
    );
    assert_eq!(
        value(&scrape, "andera_lb_worker_reported_memory_used_percent", &w),
        40.0
    );
    // Slot figures may still be moving (the feed reports each task's start and end).
    for family in [
        "andera_lb_worker_reported_slots_used",
        "andera_lb_worker_reported_queue",
        "andera_lb_worker_slots_free",
    ] {
        assert!(
            (0.0..=4.0).contains(&value(&scrape, family, &w)),
            "{family}"
        );
    }
    assert_eq!(value(&scrape, "andera_lb_worker_ejections_total", &w), 0.0);
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(value(&scrape, "andera_lb_build_info", &version), 1.0);
    assert_eq!(value(&scrape, "andera_lb_queue_limit", &[]), 10_000.0);
    let timeouts = [("service", "client"), ("route", "task"), ("status", "504")];
    assert_eq!(
        value(&scrape, "andera_lb_http_responses_total", &timeouts),
        0.0
    );
}

/// Every `andera_lb_…` name in `expr`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("andera_lb_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every PromQL string of the dashboard: panel targets' `expr` and variables' queries.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn alert_rules() -> Vec<serde_yaml::Value> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/prometheus/alerts.yml")).unwrap();
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/andera-lb.json")).unwrap()
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_name_exists() {
    let (text, _) = live_scrape().await;
    let scrape = parse_scrape(&text);
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), &mut queries);
    let dashboard_count = queries.len();
    assert!(dashboard_count > 30, "{queries:?}");
    for rule in alert_rules() {
        queries.push(rule["expr"].as_str().unwrap().to_string());
    }
    let mut named = BTreeSet::new();
    for q in &queries {
        for name in metric_names(q) {
            let family = family_of(&scrape, &name);
            assert!(
                family.is_some(),
                "{name} (in {q}) is not in the scrape:\n{text}"
            );
            named.extend(family);
        }
    }
    // The panels and rules the issue asks for name these.
    for family in [
        "andera_lb_tasks_total",
        "andera_lb_http_responses_total",
        "andera_lb_task_duration_seconds",
        "andera_lb_queue_wait_seconds",
        "andera_lb_queue_depth",
        "andera_lb_queue_depth_by_group",
        "andera_lb_queue_depth_by_priority_class",
        "andera_lb_queue_limit",
        "andera_lb_worker_slots_used",
        "andera_lb_worker_slots_free",
        "andera_lb_worker_ejected",
        "andera_lb_worker_ejections_total",
        "andera_lb_worker_reported_cpu_load",
        "andera_lb_worker_reported_memory_used_percent",
        "andera_lb_worker_reported_queue",
        "andera_lb_journal_state",
        "andera_lb_journal_bytes",
        "andera_lb_journal_unknown_total",
        "andera_lb_journal_write_errors_total",
    ] {
        assert!(named.contains(family), "no panel or rule uses {family}");
    }
}

#[test]
fn the_dashboard_is_templated_on_its_datasource() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["name"] == "DS_PROMETHEUS")
        .expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        if p["type"] == "row" {
            continue;
        }
        let title = &p["title"];
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        }
    }
}

/// The names of the alerts a promtool test case of `tests` expects firing, and of
/// those it expects quiet.
fn promtool_cases(tests: &serde_yaml::Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for case in tests["tests"].as_sequence().unwrap() {
        for t in case["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = t["alertname"].as_str().unwrap().to_string();
            let expected = t["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected > 0 {
                &mut firing
            } else {
                &mut quiet
            }
            .insert(name);
        }
    }
    (firing, quiet)
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_promtool_case() {
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/prometheus/alerts.test.yml")).unwrap();
    let (firing, quiet) = promtool_cases(&tests);
    let alerts: BTreeSet<String> = alert_rules()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    assert!(alerts.len() >= 9, "{alerts:?}");
    for alert in &alerts {
        assert!(
            firing.contains(alert),
            "no promtool case where {alert} fires"
        );
        assert!(
            quiet.contains(alert),
            "no promtool case where {alert} stays quiet"
        );
    }
    let Ok(out) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        eprintln!(
            "SKIP promtool runs: promtool is not installed (Debian: apt-get install prometheus)"
        );
        return;
    };
    assert!(out.status.success());
    let promtool = |args: &[&str]| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(REPO)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
    };
    promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    promtool(&["test", "rules", "deploy/prometheus/alerts.test.yml"]);
    // The dashboard's queries parse as PromQL (its variables given values).
    let mut queries = Vec::new();
    dashboard_queries(&dashboard()["panels"], &mut queries);
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let q = q
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*")
                .replace("$group", ".*");
            json!({"record": format!("dashboard:query{i}"), "expr": q})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yml");
    let doc = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, doc.to_string()).unwrap();
    promtool(&["check", "rules", file.to_str().unwrap()]);
}
