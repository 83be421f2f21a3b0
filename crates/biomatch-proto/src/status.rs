//! The single place where an error class becomes a gRPC code or an HTTP status.

use biomatch_domain::{Classified, ErrorClass};

fn grpc_code(class: ErrorClass) -> tonic::Code {
    match class {
        ErrorClass::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorClass::NotFound => tonic::Code::NotFound,
        ErrorClass::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorClass::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorClass::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorClass::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorClass::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorClass::Unavailable => tonic::Code::Unavailable,
        ErrorClass::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        ErrorClass::Unimplemented => tonic::Code::Unimplemented,
        ErrorClass::Internal => tonic::Code::Internal,
    }
}

/// The HTTP status for a gRPC code, as the REST gateway answers it.
pub fn http_status(code: tonic::Code) -> http::StatusCode {
    use http::StatusCode as H;
    use tonic::Code as C;
    match code {
        C::Ok => H::OK,
        C::InvalidArgument | C::OutOfRange => H::BAD_REQUEST,
        C::NotFound => H::NOT_FOUND,
        C::AlreadyExists | C::Aborted => H::CONFLICT,
        C::FailedPrecondition => H::UNPROCESSABLE_ENTITY,
        C::PermissionDenied => H::FORBIDDEN,
        C::Unauthenticated => H::UNAUTHORIZED,
        C::ResourceExhausted => H::TOO_MANY_REQUESTS,
        C::Unavailable => H::SERVICE_UNAVAILABLE,
        C::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        C::Unimplemented => H::NOT_IMPLEMENTED,
        C::Cancelled => H::from_u16(499).unwrap_or(H::BAD_REQUEST),
        C::Unknown | C::Internal | C::DataLoss => H::INTERNAL_SERVER_ERROR,
    }
}

/// The canonical upper-case name of a gRPC code, e.g. `INVALID_ARGUMENT`.
pub fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A status carrying only what a client may see.
pub fn status_from<E: Classified + ?Sized>(err: &E) -> tonic::Status {
    tonic::Status::new(grpc_code(err.class()), err.public_message())
}

/// A status of a class with a message written for the client.
pub fn status_with(class: ErrorClass, message: impl Into<String>) -> tonic::Status {
    tonic::Status::new(grpc_code(class), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Leaky;

    impl std::fmt::Display for Leaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("SELECT * FROM templates failed at /var/lib/biomatch/gallery.db")
        }
    }

    impl std::error::Error for Leaky {}

    impl Classified for Leaky {
        fn class(&self) -> ErrorClass {
            ErrorClass::Internal
        }
    }

    #[test]
    fn code_names_are_canonical() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let status = status_from(&Leaky);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert_eq!(http_status(status.code()), http::StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn client_errors_map_to_4xx() {
        for class in [
            ErrorClass::InvalidArgument,
            ErrorClass::NotFound,
            ErrorClass::AlreadyExists,
            ErrorClass::FailedPrecondition,
            ErrorClass::PermissionDenied,
            ErrorClass::Unauthenticated,
            ErrorClass::ResourceExhausted,
        ] {
            assert!(http_status(grpc_code(class)).is_client_error(), "{class:?}");
        }
    }
}
