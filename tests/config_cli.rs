//! Start-up behaviour of the binary: refusing bad configuration clearly, `-t`, and
//! the original's zero-configuration start.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn a_missing_key_refuses_to_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let out = lb_once(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("LB_AUTH_KEY"), "{err}");
}

#[test]
fn bad_values_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", "k")
        .env("TASK_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TASK_TIMEOUT"));

    let conf = dir.path().join("lb.yaml");
    std::fs::write(&conf, "tasks:\n  attempts: 0\n").unwrap();
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", "k")
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("lb.yaml") && err.contains("attempts"), "{err}");

    std::fs::write(dir.path().join("workers.json"), r#"["ftp://nope"]"#).unwrap();
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", "k")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("workers.json") && err.contains("ftp://nope"),
        "{err}"
    );
}

#[test]
fn dash_t_validates_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("workers.json"),
        r#"["http://127.0.0.1:3000"]"#,
    )
    .unwrap();
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", "k")
        .arg("-t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 worker"));
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/andera-lb.yaml");
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", "k")
        .args(["-t", "--config", shipped])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the shipped configuration is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dash_t_refuses_a_key_that_cannot_be_sent_and_never_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("workers.json"),
        r#"["http://127.0.0.1:3000"]"#,
    )
    .unwrap();
    for key in ["two words", "line\nbreak", "caf\u{e9}-key"] {
        let out = lb_once(dir.path())
            .env("LB_AUTH_KEY", key)
            .arg("-t")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("cannot be sent in an HTTP header"), "{err}");
        assert!(!err.contains(key), "the key is never printed: {err}");
    }
}

#[test]
fn dash_t_warns_on_an_empty_list_duplicates_and_the_default_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |list: &str, key: &str| {
        std::fs::write(dir.path().join("workers.json"), list).unwrap();
        let out = lb_once(dir.path())
            .env("LB_AUTH_KEY", key)
            .arg("-t")
            .output()
            .unwrap();
        assert!(out.status.success(), "warnings do not refuse: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("[]", "k");
    assert!(err.contains("warning") && err.contains("empty"), "{err}");
    let err = run(
        r#"["http://127.0.0.1:3000", "http://127.0.0.1:3001", "http://127.0.0.1:3000"]"#,
        "k",
    );
    assert!(
        err.contains("\"http://127.0.0.1:3000\" is listed more than once"),
        "{err}"
    );
    assert!(!err.contains("3001"), "{err}");
    let err = run(r#"["http://127.0.0.1:3000"]"#, "default-lb-auth-key");
    assert!(err.contains("well-known default key"), "{err}");
    let err = run(r#"["http://127.0.0.1:3000"]"#, "k");
    assert!(err.is_empty(), "a good list gives no warning: {err}");
}

#[tokio::test]
async fn the_well_known_default_key_starts_with_a_loud_warning() {
    let w = sim(|c| c.lb_key = "default-lb-auth-key".into()).await;
    let lb = Lb::start(&[w.url()], &[("LB_AUTH_KEY", "default-lb-auth-key")]).await;
    let h: serde_json::Value = lb.get_json(&lb.url("/health"), false).await;
    assert_eq!(h, json!({"status": "ready"}));
    assert!(lb.log().contains("well-known default key"), "{}", lb.log());
}

// ---- issue #19, item 13: units, booleans, every warning in -t, --strict ----

#[test]
fn dash_t_prints_every_warning_and_strict_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("workers.json"),
        r#"["http://127.0.0.1:3000"]"#,
    )
    .unwrap();
    let check = |env: &[(&str, &str)], strict: bool| {
        let mut cmd = lb_once(dir.path());
        cmd.env("LB_AUTH_KEY", "k").arg("-t");
        if strict {
            cmd.arg("--strict");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let odd = [("TASK_TIMEOUT", "10s"), ("DASHBOARD_ENABLED", "maybe")];
    let (code, out, err) = check(&odd, false);
    assert_eq!(code, Some(0), "warnings alone do not refuse: {err}");
    assert!(out.contains("configuration OK"), "{out}");
    assert!(
        err.contains(
            r#"warning: configuration: TASK_TIMEOUT="10s": read as 10000 ms; the original load balancer would read 10 ms"#
        ),
        "{err}"
    );
    assert!(
        err.contains(r#"DASHBOARD_ENABLED="maybe" is not a boolean (true or false): read as true, the default"#),
        "{err}"
    );
    let (code, out, err) = check(&odd, true);
    assert_eq!(code, Some(2), "--strict refuses warnings: {err}");
    assert!(!out.contains("configuration OK"), "{out}");
    assert!(
        err.contains("TASK_TIMEOUT") && err.contains("2 warning(s)"),
        "{err}"
    );
    let (code, _, err) = check(&[("TASK_TIMEOUT", "300000")], true);
    assert_eq!(code, Some(0), "nothing to warn about: {err}");
    assert!(err.is_empty(), "{err}");
    // --strict on a real start refuses before binding anything.
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", "k")
        .env("WS_HEARTBEAT_TIMEOUT", "3 s")
        .arg("--strict")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(r#"WS_HEARTBEAT_TIMEOUT="3 s": read as 3000 ms"#),
        "{err}"
    );
}

/// What a start logs as warnings, `-t` prints: the same command with `-t` added.
#[tokio::test]
async fn dash_t_prints_what_a_start_warns_about() {
    let w = sim(|_| {}).await;
    let env = [
        ("WORKER_DISCOVERY_INTERVAL", "0.2s"),
        ("BULL_BOARD_ENABLED", "nope"),
        ("ADMIN_ON_CLIENT_PORT", "Yes"),
    ];
    let lb = Lb::start(&[w.url(), w.url()], &env).await;
    lb.wait_available(1).await;
    let log = lb.log();
    let start = log.find(" starting: client").expect("the start line");
    let warned: Vec<&str> = log[..start]
        .lines()
        .filter(|l| l.contains(" WARN "))
        .filter_map(|l| l.split_once("] ").map(|(_, msg)| msg))
        .collect();
    // The repeated Worker and the three values, at least.
    assert!(warned.len() >= 4, "{warned:?}\n{log}");
    for var in [
        "WORKER_DISCOVERY_INTERVAL",
        "BULL_BOARD_ENABLED",
        "ADMIN_ON_CLIENT_PORT",
    ] {
        assert!(warned.iter().any(|w| w.contains(var)), "{var}: {warned:?}");
    }
    let mut check = Command::new(lb.command.get_program());
    check.env_clear().current_dir(lb.dir.path());
    for (k, v) in lb.command.get_envs() {
        if let (k, Some(v)) = (k, v) {
            check.env(k, v);
        }
    }
    check.args(lb.command.get_args()).arg("-t");
    let out = check.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for w in warned {
        assert!(
            err.contains(&format!("andera-lb: warning: {w}")),
            "{w:?} not in:\n{err}"
        );
    }
}

/// `TASK_TIMEOUT=10s` is ten seconds, not the original's ten milliseconds.
#[tokio::test]
async fn a_timeout_with_a_unit_means_what_it_says() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[("TASK_TIMEOUT", "10s")]).await;
    lb.wait_available(1).await;
    let (s, b) = lb.run(task("sleep", json!({"ms": 200}))).await;
    assert_eq!(s, 200, "{b}\n{}", lb.log());
    assert!(
        lb.log().contains(
            r#"TASK_TIMEOUT="10s": read as 10000 ms; the original load balancer would read 10 ms"#
        ),
        "{}",
        lb.log()
    );
}

/// `upstream.forward_headers` is checked at load: a hop-by-hop name or one the load
/// balancer writes itself refuses to start, naming the key (#20 item 4).
#[test]
fn dash_t_refuses_forward_headers_that_cannot_be_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let conf = dir.path().join("lb.yaml");
    for (list, why) in [
        ("[x-request-id, Connection]", "hop-by-hop"),
        ("[Content-Type]", "written by the load balancer"),
        ("[\"bad name\"]", "not a header name"),
    ] {
        std::fs::write(&conf, format!("upstream:\n  forward_headers: {list}\n")).unwrap();
        let out = lb_once(dir.path())
            .env("LB_AUTH_KEY", "k")
            .args(["-t", "--config"])
            .arg(&conf)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{list}: {err}");
        assert!(
            err.contains("lb.yaml: upstream.forward_headers") && err.contains(why),
            "{list}: {err}"
        );
    }
    std::fs::write(&conf, "upstream:\n  forward_headers: [X-Request-Id]\n").unwrap();
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", "k")
        .args(["-t", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dash_t_tries_a_redis_journal() {
    // `ExecStartPre=andera-lb -t` must catch what the start would refuse: a Redis
    // journal nobody answers on.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let port = free_port();
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", "k")
        .env("TASK_JOURNAL", format!("redis://127.0.0.1:{port}"))
        .arg("-t")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}
