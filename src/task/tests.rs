//! Task body validation and what the Worker receives.

use super::*;

fn err(body: &str) -> String {
    parse(body.as_bytes()).unwrap_err().to_string()
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
        err(r#"{"group":"g","function":"f","contract":1,"mode":"webhook","webhook":{"url":5}}"#),
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
    for p in ["2097153", "1.5", "\"1\"", "\"x\"", "-1.5", "1e400", "true"] {
        let body = format!(r#"{{"group":"g","function":"f","contract":1,"priority":{p}}}"#);
        assert!(err(&body).contains("priority"), "{p}");
    }
    assert!(parse(br#"{"group":"g","function":"f","contract":1,"priority":2097152}"#).is_ok());
    assert!(err(r#"{"group":"g","function":"f","contract":1,"mode":"fast"}"#).contains("mode"));
}

fn forward(body: &str) -> (TaskSpec, String) {
    let p = parse_for_worker(&Bytes::from(body.to_string()), &Limits::default()).unwrap();
    (p.spec, String::from_utf8(p.forward.to_vec()).unwrap())
}

#[test]
fn accepts_what_the_original_accepted() {
    for (p, want) in [
        ("null", 1),
        ("0", 1),
        ("5.0", 5),
        ("1e0", 1),
        ("-0", 1),
        ("7", 7),
    ] {
        let body = format!(r#"{{"group":"g","function":"f","contract":1,"priority":{p}}}"#);
        assert_eq!(parse(body.as_bytes()).unwrap().priority, want, "{p}");
    }
    let t = parse(br#"{"group":"g","function":"f","contract":1.0}"#).unwrap();
    assert_eq!(t.contract, 1);
    assert_eq!(
        parse(br#"{"group":"g","function":"f","contract":2e0}"#)
            .unwrap()
            .contract,
        2
    );
    assert!(err(r#"{"group":"g","function":"f","contract":1.5}"#).contains("contract"));
    assert!(err(r#"{"group":"g","function":"f","contract":-1}"#).contains("contract"));
    // Repeated keys: the last one wins, as with JSON.parse.
    let t = parse(
        br#"{"group":"a","group":"g","function":"f","contract":1,"priority":9,"priority":3}"#,
    )
    .unwrap();
    assert_eq!((t.group.as_str(), t.priority), ("g", 3));
    assert!(
        err(r#"{"group":"g","function":"f","contract":1,"priority":3,"priority":1.5}"#)
            .contains("priority")
    );
    let hook = r#"{"group":"g","function":"f","contract":1,"mode":"webhook","webhook":{"url":5,"url":"http://h/x"}}"#;
    assert_eq!(parse(hook.as_bytes()).unwrap().mode, Mode::Webhook);
}

#[test]
fn the_worker_gets_what_the_original_sent() {
    // Nothing to change: the very same bytes (and buffer).
    let plain = r#"{ "group":"g", "function":"f","contract":1,"input":{"n":1.50} }"#;
    let bytes = Bytes::from(plain);
    let p = parse_for_worker(&bytes, &Limits::default()).unwrap();
    assert_eq!(p.forward.as_ptr(), bytes.as_ptr());
    // `priority` is never forwarded, whatever its value.
    for p in ["null", "0", "5.0", "3"] {
        let body = format!(
            r#"{{"group":"g","priority":{p},"function":"f","contract":1,"input":{{"a":[1, 2]}},"x":null}}"#
        );
        let (_, sent) = forward(&body);
        assert_eq!(
            sent,
            r#"{"group":"g","function":"f","contract":1,"input":{"a":[1, 2]},"x":null}"#
        );
    }
    // An integral float contract arrives as the integer; repeated keys once, last value, first place.
    let (spec, sent) =
        forward(r#"{"contract":1.0,"group":"a","function":"f","group":"g","\u0065":1}"#);
    assert_eq!(spec.group, "g");
    assert_eq!(sent, r#"{"contract":1,"group":"g","function":"f","e":1}"#);
    let v: serde_json::Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(v["group"], "g");
}

#[test]
fn a_repeated_key_is_found_in_small_and_large_bodies() {
    for extra in [0, 3, 14, 40] {
        let members: String = (0..extra).map(|i| format!(r#","k{i}":{i}"#)).collect();
        let plain = format!(r#"{{"group":"g","function":"f","contract":1{members}}}"#);
        let bytes = Bytes::from(plain.clone());
        let p = parse_for_worker(&bytes, &Limits::default()).unwrap();
        assert_eq!(
            p.forward.as_ptr(),
            bytes.as_ptr(),
            "{extra} extra: kept as sent"
        );
        // The repeat is the last member: found whichever way the keys are compared.
        let repeated = format!(r#"{},"group":"h"}}"#, &plain[..plain.len() - 1]);
        let (spec, sent) = forward(&repeated);
        assert_eq!(spec.group, "h", "{extra} extra");
        assert_eq!(
            sent.matches(r#""group""#).count(),
            1,
            "{extra} extra: {sent}"
        );
    }
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
        parse_with(v.to_string().as_bytes(), &limits).map_err(|e| e.to_string())
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
    assert_eq!(
        d.unwrap_err().to_string(),
        "group is too long (limit 256 bytes)"
    );
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

#[test]
fn a_bom_is_skipped_and_not_forwarded() {
    let plain = r#"{"group":"g","function":"f","contract":1}"#;
    let bytes = Bytes::from(format!("\u{feff}{plain}"));
    let p = parse_for_worker(&bytes, &Limits::default()).unwrap();
    assert_eq!(p.spec.group, "g");
    assert_eq!(&p.forward[..], plain.as_bytes());
    // Kept uncopied: the same buffer, past the mark.
    assert_eq!(p.forward.as_ptr(), bytes[3..].as_ptr());
    let (_, sent) = forward(&format!(
        "\u{feff}{}",
        r#"{"group":"g","function":"f","contract":1,"priority":2}"#
    ));
    assert_eq!(sent, r#"{"group":"g","function":"f","contract":1}"#);
    // Only one mark, only at the start.
    assert!(err("\u{feff}\u{feff}{}").contains("JSON object"));
    assert!(err(" \u{feff}{}").contains("JSON object"));
}

#[test]
fn a_negative_priority_runs_at_the_default_priority() {
    for (p, negative) in [
        ("-1", Some(-1)),
        ("-7.0", Some(-7)),
        ("3", None),
        ("0", None),
    ] {
        let body = format!(r#"{{"group":"g","function":"f","contract":1,"priority":{p}}}"#);
        let parsed = parse_for_worker(&Bytes::from(body), &Limits::default()).unwrap();
        assert_eq!(parsed.negative_priority, negative, "{p}");
        if negative.is_some() {
            assert_eq!(parsed.spec.priority, 1, "{p}");
            assert!(!parsed.forward.windows(8).any(|w| w == b"priority"));
        }
    }
}

#[test]
fn falsy_routing_fields_are_missing_like_the_original() {
    for (field, value) in [
        ("contract", "0"),
        ("contract", "-0"),
        ("contract", "0.0"),
        ("contract", "false"),
        ("contract", "\"\""),
        ("contract", "null"),
        ("group", "0"),
        ("group", "\"\""),
        ("function", "false"),
    ] {
        let mut members = vec![
            ("group", "\"g\"".to_string()),
            ("function", "\"f\"".to_string()),
            ("contract", "1".to_string()),
        ];
        for m in &mut members {
            if m.0 == field {
                m.1 = value.to_string();
            }
        }
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        assert_eq!(
            err(&format!("{{{}}}", body.join(","))),
            MISSING_FIELDS,
            "{field}: {value}"
        );
    }
    // Truthy but wrong: still named.
    assert!(err(r#"{"group":"g","function":"f","contract":true}"#).contains("contract"));
    assert!(err(r#"{"group":1,"function":"f","contract":1}"#).contains("group must be"));
}
