use std::fmt;
use std::time::Duration;

use prost::{Message, Name};
use tonic::Code;
use tonic_types::StatusExt;

use crate::pb;

/// A failed Ferry call: the gRPC code, Ferry's `google.rpc.ErrorInfo` reason (stable, for
/// programs to branch on) and the other details Ferry packs into the status.
#[derive(Debug, Clone)]
pub struct FerryError {
    code: Code,
    message: String,
    reason: Option<String>,
    retry_delay: Option<Duration>,
    field_violations: Vec<FieldViolation>,
    assigned_event_ids: Vec<String>,
}

/// One `google.rpc.BadRequest` field violation: which field was malformed and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FerryError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        FerryError {
            code,
            message: message.into(),
            reason: None,
            retry_delay: None,
            field_violations: Vec::new(),
            assigned_event_ids: Vec::new(),
        }
    }

    /// The gRPC status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message for people; do not branch on its text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `google.rpc.ErrorInfo` reason (e.g. `LOG_FULL`, `FIELD_INVALID`), `None` when the
    /// status carried no ErrorInfo (it came from the gRPC transport, not from Ferry).
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The delay Ferry asked for before a retry, if any (its `google.rpc.RetryInfo`, or a
    /// stream answer's `Failure.retry_delay`).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_delay
    }

    /// The `google.rpc.BadRequest` violations of an `INVALID_ARGUMENT`.
    pub fn field_violations(&self) -> &[FieldViolation] {
        &self.field_violations
    }

    /// The `ferry.v1.AssignedEventIds` of a `DEADLINE_EXCEEDED` publish (or a stream answer's
    /// `assigned_event_ids`): the id of every event of the request, in request order.
    pub fn assigned_event_ids(&self) -> &[String] {
        &self.assigned_event_ids
    }

    /// Whether the client's publish policy retries this error (see [`crate::classify`]).
    pub fn is_retryable(&self) -> bool {
        crate::retry::classify(self) != crate::Retry::No
    }

    /// The error of one refused event of a batch, or of one refused request of a stream.
    pub(crate) fn from_failure(failure: &pb::Failure) -> Self {
        let mut err = FerryError::new(Code::from_i32(failure.code), failure.message.clone());
        if !failure.reason.is_empty() {
            err.reason = Some(failure.reason.clone());
        }
        err.retry_delay = failure.retry_delay.and_then(|d| Duration::try_from(d).ok());
        if !failure.field.is_empty() {
            err.field_violations.push(FieldViolation {
                field: failure.field.clone(),
                description: failure.message.clone(),
            });
        }
        err
    }

    /// The same error, naming the ids of the request's events (which may have been logged).
    pub(crate) fn with_assigned_event_ids(mut self, ids: Vec<String>) -> Self {
        self.assigned_event_ids = ids;
        self
    }
}

impl From<tonic::Status> for FerryError {
    fn from(status: tonic::Status) -> Self {
        let mut err = FerryError::new(status.code(), status.message());
        if status.details().is_empty() {
            return err;
        }
        let details = status.get_error_details();
        err.reason = details.error_info().map(|info| info.reason.clone());
        err.retry_delay = details.retry_info().and_then(|info| info.retry_delay);
        if let Some(bad) = details.bad_request() {
            err.field_violations = bad
                .field_violations
                .iter()
                .map(|v| FieldViolation {
                    field: v.field.clone(),
                    description: v.description.clone(),
                })
                .collect();
        }
        // tonic-types decodes only the google.rpc details; Ferry's own one is read here.
        if let Ok(rpc_status) = tonic_types::pb::Status::decode(status.details()) {
            let type_url = pb::AssignedEventIds::type_url();
            for any in rpc_status.details.iter().filter(|a| a.type_url == type_url) {
                if let Ok(ids) = pb::AssignedEventIds::decode(any.value.as_slice()) {
                    err.assigned_event_ids = ids.event_ids;
                }
            }
        }
        err
    }
}

impl fmt::Display for FerryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", code_name(self.code))?;
        if let Some(reason) = &self.reason {
            write!(f, " ({reason})")?;
        }
        write!(f, ": {}", self.message)?;
        for v in &self.field_violations {
            write!(f, " [{}: {}]", v.field, v.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for FerryError {}

/// The canonical gRPC name of a code, as the proto comments and other clients spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
