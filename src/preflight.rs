//! Refusing to run when a listening address is taken. Pingora retries a busy port
//! for 30 s, then panics inside the service's runtime while the process stays up
//! (and `/ready` may still say 200 on the other port). Both checks here turn that
//! into one clear line on stderr and a non-zero exit.

use std::net::{SocketAddr, TcpListener};

/// Exit code when a listening address cannot be bound.
pub const EXIT_BIND: u8 = 3;

/// Binds each address once and lets it go; the first that fails is named in the
/// error. Skipped on `--upgrade`, where the sockets come from the old process.
/// `std`'s bind sets `SO_REUSEADDR` like Pingora's, so sockets in TIME_WAIT pass.
pub fn check_listen(addrs: &[(&str, SocketAddr)]) -> Result<(), String> {
    for (key, addr) in addrs {
        if let Err(e) = TcpListener::bind(addr) {
            return Err(format!("cannot listen on {addr} ({key}): {e}"));
        }
    }
    Ok(())
}

/// The start of Pingora's panic message when a listener could not be built (the
/// `expect` in `Service::start_service`).
const LISTENER_PANIC: &str = "Failed to build listeners";

/// Makes a listener that fails after the pre-flight check (the port was taken in
/// between) end the process with one line naming the address and its key, instead
/// of leaving it up and serving nothing. Other panics keep the default behaviour.
///
/// Pingora's error text is not parsed: the failing address is the one of `addrs`
/// that its message names (any error that names the address it could not bind
/// does), else all of them.
pub fn exit_on_listener_failure(addrs: &[(&'static str, SocketAddr)]) {
    let addrs = addrs.to_vec();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if payload.starts_with(LISTENER_PANIC) {
            eprintln!("andera-lb: {}", listener_failure(&addrs, payload));
            std::process::exit(i32::from(EXIT_BIND));
        }
        default(info);
    }));
}

/// The line for a listener that failed: the addresses of `addrs` that `message`
/// names (all of them when it names none).
fn listener_failure(addrs: &[(&'static str, SocketAddr)], message: &str) -> String {
    let named: Vec<_> = addrs
        .iter()
        .filter(|(_, addr)| message.contains(&addr.to_string()))
        .collect();
    let shown = if named.is_empty() {
        addrs.iter().collect()
    } else {
        named
    };
    let list = shown
        .iter()
        .map(|(key, addr)| format!("{addr} ({key})"))
        .collect::<Vec<_>>()
        .join(" or ");
    format!("cannot listen on {list}: it was taken after the start-up check, or cannot be bound")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_address_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = check_listen(&[("admin.listen", addr)]).unwrap_err();
        assert!(
            e.contains(&addr.to_string()) && e.contains("admin.listen"),
            "{e}"
        );
        drop(taken);
        assert!(check_listen(&[("listen", addr)]).is_ok());
    }

    #[test]
    fn a_listener_failure_names_the_address_its_message_mentions_in_any_format() {
        let addrs = [
            ("listen", "0.0.0.0:4000".parse().unwrap()),
            ("admin.listen", "127.0.0.1:4001".parse().unwrap()),
        ];
        for message in [
            r#"Failed to build listeners: Error { etype: BindError, context: Some(Owned("bind() failed, after retries, 0.0.0.0:4000 still in use")) }"#,
            "Failed to build listeners: BindError: 0.0.0.0:4000 in use",
        ] {
            let line = listener_failure(&addrs, message);
            assert!(line.contains("0.0.0.0:4000 (listen)"), "{line}");
            assert!(!line.contains("admin.listen"), "{line}");
        }
        // A message that names no address: both are named, nothing is guessed.
        let line = listener_failure(&addrs, "Failed to build listeners: something else");
        assert!(
            line.contains("0.0.0.0:4000 (listen) or 127.0.0.1:4001 (admin.listen)"),
            "{line}"
        );
    }
}
