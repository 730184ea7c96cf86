//! Why a task body was refused with `400`. Its `Display` is the message the client
//! reads, word for word as clients of the original expect it.

use std::fmt;

use super::{MAX_PRIORITY, MISSING_FIELDS};

/// Why a task body is not a task (a `400 Bad Request`).
#[derive(Debug)]
pub enum BodyError {
    /// Not a JSON object (`empty`: no body at all).
    NotAnObject {
        /// The body was empty or whitespace.
        empty: bool,
    },
    /// Not valid JSON; the parser's error says where.
    InvalidJson(serde_json::Error),
    /// `group`, `function` or `contract` is missing or falsy.
    MissingFields,
    /// A field that must be a string is not one.
    NotAString(&'static str),
    /// A string field is longer than its limit.
    TooLong {
        /// The field (`group`, `function`, `mode`, `webhook.url`).
        field: &'static str,
        /// Its limit in bytes.
        max: usize,
    },
    /// `contract` is not a non-negative integer.
    BadContract,
    /// `input` is not an object.
    InputNotAnObject,
    /// `priority` is not an integer within range.
    BadPriority,
    /// `mode` is not one of the three.
    BadMode,
    /// A webhook task without a usable `webhook.url`.
    MissingWebhookUrl,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::NotAnObject { empty: true } => {
                f.write_str("Request body must be a JSON object (got an empty body)")
            }
            BodyError::NotAnObject { empty: false } => {
                f.write_str("Request body must be a JSON object")
            }
            BodyError::InvalidJson(e) => write!(f, "Invalid JSON body: {e}"),
            BodyError::MissingFields => f.write_str(MISSING_FIELDS),
            BodyError::NotAString(field) => write!(f, "{field} must be a string"),
            BodyError::TooLong { field, max } => {
                write!(f, "{field} is too long (limit {max} bytes)")
            }
            BodyError::BadContract => f.write_str("contract must be a non-negative integer"),
            BodyError::InputNotAnObject => f.write_str("input must be an object"),
            BodyError::BadPriority => {
                write!(f, "priority must be an integer from 1 to {MAX_PRIORITY}")
            }
            BodyError::BadMode => f.write_str("mode must be one of sync, stream, webhook"),
            BodyError::MissingWebhookUrl => {
                f.write_str("Missing or invalid webhook.url for mode webhook")
            }
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::InvalidJson(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    #[test]
    fn invalid_json_keeps_the_parsers_error_as_its_cause() {
        let e = super::super::parse(b"{\"group\": ").unwrap_err();
        assert!(e.to_string().starts_with("Invalid JSON body: "), "{e}");
        let cause = e.source().expect("a cause");
        assert!(cause.downcast_ref::<serde_json::Error>().is_some());
    }
}
