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

/// Pingora's panic message when a listener could not be built.
const LISTENER_PANIC: &str = "Failed to build listeners";

/// Makes a listener that fails after the pre-flight check (the port was taken in
/// between) end the process with one line naming the address, instead of leaving
/// it up and serving nothing. Other panics keep the default behaviour.
pub fn exit_on_listener_failure() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(detail) = payload.strip_prefix(LISTENER_PANIC) {
            eprintln!("andera-lb: cannot listen: {}", one_line(detail));
            std::process::exit(i32::from(EXIT_BIND));
        }
        default(info);
    }));
}

/// The part of Pingora's error chain that names the address, on one line: its
/// `context` ("bind() failed, after retries, 0.0.0.0:4000 still in use") when present.
fn one_line(detail: &str) -> String {
    let context = detail
        .split_once("context: Some(Owned(\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(c, _)| c);
    let text = context.unwrap_or(detail.trim_start_matches([':', ' ']));
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(300).collect()
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
    fn pingora_errors_shrink_to_their_context() {
        let detail = r#": Error { etype: BindError, cause: Some(Os { code: 98 }), context: Some(Owned("bind() failed, after retries, 0.0.0.0:4000 still in use")) }"#;
        assert_eq!(
            one_line(detail),
            "bind() failed, after retries, 0.0.0.0:4000 still in use"
        );
        assert_eq!(one_line(": odd\n  error"), "odd error");
    }
}
