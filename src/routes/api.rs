//! JSON data routes of the dashboard and the task board. All require the LB key.

use std::collections::HashMap;

use base64::Engine;
use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::{json, Value};

use crate::app::App;
use crate::metrics::METRICS;
use crate::{logring, respond};

/// Largest Worker `/logs` answer relayed.
const MAX_WORKER_LOGS: usize = 4 << 20;

/// `GET /dashboard/api/workers`: every Worker of the list, invalid ones included.
pub(crate) async fn workers(app: &App, session: &mut Session) -> Result<u16> {
    let (mut valid, invalid) = app.registry().snapshot();
    valid.extend(invalid);
    respond::json(session, 200, &Value::Array(valid), &[]).await?;
    Ok(200)
}

/// `GET /dashboard/api/workers/<base64 url>/logs`: a listed Worker's own logs.
/// URLs not in the current list are refused: the key is never sent elsewhere.
pub(crate) async fn worker_logs(app: &App, session: &mut Session, encoded: &str) -> Result<u16> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded))
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some(url) = decoded.and_then(|u| app.registry().find_by_url(&u)) else {
        respond::error(
            session,
            404,
            "Unknown Worker: only Workers in the current list can be queried",
            &[],
        )
        .await?;
        return Ok(404);
    };
    let s = app.settings();
    let fetched = app
        .registry()
        .upstream
        .get(
            &url,
            "/logs",
            &[("x-lb-auth", s.lb_key.expose())],
            s.discovery.timeout,
            MAX_WORKER_LOGS,
        )
        .await;
    let (status, body) = match fetched {
        Ok((200, body)) => match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.get("logs").is_some_and(Value::is_array) => {
                (200, json!({"logs": v["logs"]}))
            }
            _ => (
                502,
                json!({"error": "Worker /logs did not answer {\"logs\": [...]}"}),
            ),
        },
        Ok((code, _)) => (
            502,
            json!({"error": format!("Worker /logs answered {code}")}),
        ),
        Err(e) => (502, json!({"error": format!("Worker /logs failed: {e}")})),
    };
    respond::json(session, status, &body, &[]).await?;
    Ok(status)
}

fn metric_sum(name: &str, by_label: Option<(&str, &[&str])>) -> u64 {
    let mut total = 0.0;
    for family in METRICS.registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let keep = by_label.is_none_or(|(label, values)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == label && values.contains(&l.value()))
            });
            if keep {
                total += m.get_counter().value();
            }
        }
    }
    total as u64
}

/// `GET /dashboard/api/overview`: status, queue, totals, series, recent tasks, LB logs.
/// Each named client's tasks running and waiting now, and refused by its limits.
fn clients(app: &App) -> Vec<serde_json::Value> {
    let mut load = app.scheduler().client_load();
    load.sort_by(|a, b| a.0.cmp(&b.0));
    load.into_iter()
        .map(|(name, queued, running)| {
            let refused = metric_sum(
                "andera_lb_client_refused_total",
                Some(("client", &[&*name])),
            );
            json!({"name": &*name, "running": running, "queued": queued, "refused": refused})
        })
        .collect()
}

/// `/dashboard/api/overview`: the dashboard's summary (Workers, queue, tasks, clients,
/// cluster) in one answer.
pub(crate) async fn overview(app: &App, session: &mut Session) -> Result<u16> {
    let queue = app.scheduler().queue_snapshot();
    let (counts, _) = app.board().counts(None);
    let tasks = "andera_lb_tasks_total";
    let completed = metric_sum(tasks, Some(("outcome", &["ok"])));
    let timed_out = metric_sum(tasks, Some(("outcome", &["queue_timeout", "timeout"])));
    let ended = metric_sum(tasks, None);
    let running = counts["running"].as_u64().unwrap_or(0);
    let logs = logring::ring().lines();
    let tail = logs[logs.len().saturating_sub(200)..].to_vec();
    let body = json!({
        "lb": {
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeSeconds": app.uptime().as_secs_f64(),
            "draining": app.is_draining(),
        },
        "queue": {
            "depth": queue.depth,
            "max": app.settings().tasks.max_queued,
            "byPriority": queue.by_priority.iter().map(|(p, n)| json!({"priority": p, "count": n})).collect::<Vec<_>>(),
        },
        "totals": {
            "received": ended + running + queue.depth as u64,
            "completed": completed,
            "failed": ended - completed - timed_out,
            "timedOut": timed_out,
            "retried": metric_sum("andera_lb_task_retries_total", None),
            "running": running,
            "queued": queue.depth,
        },
        "clients": clients(app),
        // The cluster (`cluster.redis`) as keyed /health shows it, or `off`.
        "cluster": app.cluster().map_or_else(crate::cluster::health_off, |c| c.health()),
        "series": app.board().series(),
        "recentTasks": app.board().list(50, |_| true),
        "logs": tail,
    });
    respond::json(session, 200, &body, &[]).await?;
    Ok(200)
}

/// The request's query string as name → value (`application/x-www-form-urlencoded`
/// rules: `+` is a space, `%XX` an escape; the last repeated name wins).
fn query_params(session: &Session) -> HashMap<String, String> {
    query_pairs(session.req_header().uri.query().unwrap_or(""))
}

fn query_pairs(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `GET /bull/api/tasks?state=&group=&limit=`: counts by state and matching records.
pub(crate) async fn tasks(app: &App, session: &mut Session) -> Result<u16> {
    let q = query_params(session);
    let state = q.get("state").filter(|s| !s.is_empty()).cloned();
    let group = q.get("group").filter(|s| !s.is_empty()).cloned();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(200)
        .clamp(1, 1000);
    let list = app.board().list(limit, |r| {
        let state_ok = match state.as_deref() {
            None => true,
            Some("retried") => r.attempts() > 1,
            Some(s) => r.state_name() == s,
        };
        state_ok && group.as_deref().is_none_or(|g| r.group() == g)
    });
    let (counts, groups) = app.board().counts(group.as_deref());
    let body = json!({"counts": counts, "groups": groups, "tasks": list});
    respond::json(session, 200, &body, &[]).await?;
    Ok(200)
}

/// `GET /bull/api/tasks/<id>`: one record with its timeline.
pub(crate) async fn task(app: &App, session: &mut Session, id: &str) -> Result<u16> {
    match app.board().get(id) {
        Some(record) => {
            respond::json(session, 200, &record, &[]).await?;
            Ok(200)
        }
        None => {
            respond::error(
                session,
                404,
                "Unknown task (it may have left the board)",
                &[],
            )
            .await?;
            Ok(404)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::query_pairs;

    fn value(query: &str) -> String {
        query_pairs(query).remove("v").unwrap_or_default()
    }

    #[test]
    fn decodes_query_values() {
        assert_eq!(value("v=a%20b+c"), "a b c");
        assert_eq!(value("v=100%"), "100%");
        assert_eq!(value("v=%zz"), "%zz");
        assert_eq!(value("v=%+5"), "% 5");
        assert_eq!(value("v=%41%"), "A%");
        assert_eq!(value("x=1&v=first&v=last"), "last");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1500))]

        #[test]
        fn decoding_never_panics_and_round_trips_escapes(s in "(%|[0-9a-fA-F]|\\+|=|&|é|[ -~]){0,40}") {
            let _ = query_pairs(&s);
            let escaped: String = s.bytes().map(|b| format!("%{b:02X}")).collect();
            proptest::prop_assert_eq!(value(&format!("v={escaped}")), s);
        }
    }
}
