//! Client and Worker strings made safe to keep and print: bounded in bytes, with a
//! visible marker where they were cut, and free of raw control characters.

use std::fmt::Write;

/// Cuts `s` to at most `max` bytes (on a character boundary) plus a marker saying how
/// much was cut, e.g. `…(+1048576 bytes)`. Shorter strings are left alone.
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    s.truncate(cut);
    let _ = write!(s, "…(+{dropped} bytes)");
}

/// [`truncate`] for a borrowed string.
pub(crate) fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = s[..cut].to_string();
    let _ = write!(out, "…(+{} bytes)", s.len() - cut);
    out
}

/// Escapes control characters the way Rust's `escape_debug` does (`\n`, `\u{1b}`), so
/// that a name or a Worker's error can neither forge log lines nor drive a terminal.
/// Returns `s` unchanged (no copy) when it has none.
pub(crate) fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_is_visible_and_on_a_char_boundary() {
        let mut s = "é".repeat(10);
        truncate(&mut s, 5);
        assert_eq!(s, "éé…(+16 bytes)");
        assert_eq!(truncated("abc", 3), "abc");
        assert_eq!(truncated("abcdef", 2), "ab…(+4 bytes)");
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape_controls("a\u{1b}[31mb\nc\t"), "a\\u{1b}[31mb\\nc\\t");
        assert!(matches!(
            escape_controls("plain é"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn bounded_and_printable(s in "\\PC{0,40}|[\\x00-\\x1f]{0,10}", max in 0usize..50) {
            let t = truncated(&s, max);
            proptest::prop_assert!(t.len() <= max + "…(+ bytes)".len() + 20);
            proptest::prop_assert!(!escape_controls(&s).chars().any(char::is_control));
        }
    }
}
