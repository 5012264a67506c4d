//! Why a body could not be normalised.

/// A body that [`crate::normalize`] refuses. Every variant that concerns a place in
/// the body names it: a JSON path (`$.entry[0].changes[1].value.messages[0].id`)
/// once the body parsed, a line and column (1-based, columns in bytes) before that.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NormalizeError {
    /// The body exceeds [`crate::WEBHOOK_BODY_BYTES_MAX`].
    #[error("body is {len} bytes, above the {max}-byte limit")]
    TooLarge {
        /// Length of the body in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body has no bytes at all.
    #[error("body is empty")]
    Empty,
    /// The body is not valid UTF-8 (JSON must be).
    #[error(
        "body is not UTF-8: invalid byte at line {line} column {column} (byte offset {offset})"
    )]
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
        /// 1-based line of that byte.
        line: usize,
        /// 1-based column (in bytes) of that byte.
        column: usize,
    },
    /// The body is not one well-formed JSON value.
    #[error("invalid JSON at line {line} column {column}: {msg}")]
    InvalidJson {
        /// 1-based line.
        line: usize,
        /// 1-based column, in bytes.
        column: usize,
        /// What was wrong.
        msg: String,
    },
    /// Arrays/objects nest deeper than [`crate::JSON_DEPTH_MAX`]; `path` is the first
    /// container that would be too deep. Checked while parsing, before any recursion
    /// beyond the limit.
    #[error("nesting deeper than {max} at {path}")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Path of the container that crossed it.
        path: String,
    },
    /// A required key is absent.
    #[error("missing required key at {path}")]
    Missing {
        /// Path of the absent key.
        path: String,
    },
    /// A key twinlog reads has a value of the wrong JSON type.
    #[error("expected {expected} at {path}, found {found}")]
    WrongType {
        /// Path of the value.
        path: String,
        /// What was expected (`string`, `object`, …).
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// A timestamp, count or code that must be a whole number (a JSON integer or a
    /// string of decimal digits) is not one, or does not fit in 64 bits.
    #[error("expected an integer (number or decimal string) at {path}, found {found}")]
    NotAnInteger {
        /// Path of the value.
        path: String,
        /// The value as JSON text (cut to 64 characters).
        found: String,
    },
    /// `object` is not `whatsapp_business_account`.
    #[error("expected \"whatsapp_business_account\" at $.object, found {found}")]
    NotWhatsApp {
        /// The value found, as JSON text (cut to 64 characters).
        found: String,
    },
}
