//! Start-up behaviour of the binary: refusing bad configuration clearly, `-t`, and
//! the original's zero-configuration start.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

fn lb_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_andera-lb"));
    cmd.current_dir(dir).env_clear();
    cmd
}

#[test]
fn a_missing_key_refuses_to_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let out = lb_command(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("LB_AUTH_KEY"), "{err}");
}

#[test]
fn bad_values_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let out = lb_command(dir.path())
        .env("LB_AUTH_KEY", "k")
        .env("TASK_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TASK_TIMEOUT"));

    let conf = dir.path().join("lb.yaml");
    std::fs::write(&conf, "tasks:\n  attempts: 0\n").unwrap();
    let out = lb_command(dir.path())
        .env("LB_AUTH_KEY", "k")
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("lb.yaml") && err.contains("attempts"), "{err}");

    std::fs::write(dir.path().join("workers.json"), r#"["ftp://nope"]"#).unwrap();
    let out = lb_command(dir.path())
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
    let out = lb_command(dir.path())
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
    let out = lb_command(dir.path())
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
        let out = lb_command(dir.path())
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
        let out = lb_command(dir.path())
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
