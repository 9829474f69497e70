//! How an error becomes a Milvus `Status`. Each module keeps its own `thiserror` enum and, beside it, the
//! [`MilvusError`] impl that decides which `ErrorCode` a client sees; the reason is the error's own
//! message, written to be acted on.

use crate::{ErrorCode, Status};

/// An error that a Milvus client can be told about.
pub trait MilvusError: std::error::Error {
    fn code(&self) -> ErrorCode;

    fn to_status(&self) -> Status {
        status(self.code(), self.to_string())
    }
}

/// A `Status` with `code` and `reason`.
pub fn status(code: ErrorCode, reason: impl Into<String>) -> Status {
    Status {
        error_code: code as i32,
        reason: reason.into(),
    }
}

/// The `Status` of a call that went well.
pub fn success() -> Status {
    status(ErrorCode::Success, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_code_zero() {
        assert_eq!(success().error_code, 0);
    }
}
