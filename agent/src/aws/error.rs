//! The one error type of the AWS boundary, and the retry classification.
//!
//! Every error names the **call** in IAM spelling
//! (`autoscaling:DescribeAutoScalingGroups`), so an operator can tell which
//! permission or endpoint is involved, and the **resource** (`group web`,
//! `instance i-0abc`, `launch template lt-0abc version 4`, `image ami-0abc`).
//!
//! A call that got no usable answer ([`Error::Unreachable`]) also names the
//! **service and endpoint** it went to and what to check, in plain words
//! ("cannot reach EC2 at http://…: connection refused"), never the SDK's
//! debug dump.
//!
//! Whether an error is worth retrying is decided by one pure function,
//! [`is_retryable_failure`], over what is known of the failure: its
//! [`FailureKind`], the AWS error code and the HTTP status.

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

/// Result of an AWS boundary call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a call failed, before any AWS error code is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The request could not be built or sent as configured (bad input, bad
    /// endpoint URL, missing credentials). Trying again will not help.
    Construction,
    /// No answer in time (connect or operation time-out).
    Timeout,
    /// The request could not be delivered or the connection broke (DNS,
    /// connection refused, TLS, I/O).
    Dispatch,
    /// An answer came back but could not be understood (an HTML error page,
    /// a truncated body). The HTTP status decides.
    Response,
    /// AWS answered with an error code. The code and the status decide.
    Service,
}

/// AWS error codes that mean "slow down", whatever the HTTP status.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "EC2ThrottledException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "PriorRequestNotComplete",
    "SlowDown",
];

/// AWS error codes for conditions that clear by themselves: server-side
/// faults, and Auto Scaling's "another change is in progress on this group".
const TRANSIENT_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "ResourceContention",
    "ScalingActivityInProgress",
];

/// Whether a failure may succeed when the same call is made again later.
///
/// Retryable: time-outs and dispatch failures, throttling and transient AWS
/// codes, HTTP 429 and 5xx. Not retryable: construction failures, and every
/// other AWS answer (validation errors, missing resources, access denied),
/// which repeating the call cannot change.
pub fn is_retryable_failure(kind: FailureKind, code: Option<&str>, status: Option<u16>) -> bool {
    match kind {
        FailureKind::Construction => false,
        FailureKind::Timeout | FailureKind::Dispatch => true,
        FailureKind::Response | FailureKind::Service => {
            if code.is_some_and(|c| THROTTLING_CODES.contains(&c) || TRANSIENT_CODES.contains(&c)) {
                return true;
            }
            matches!(status, Some(429) | Some(500..=599))
        }
    }
}

/// A call to EC2 or Auto Scaling failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The call failed: AWS answered with an error, or no usable answer came.
    #[error("{call} on {resource} failed{}: {message}{}", describe_code(code.as_deref(), *status), hint(call, *kind, code.as_deref(), *status))]
    Api {
        /// The call, in IAM spelling (`ec2:DescribeImages`).
        call: &'static str,
        /// What it was about (`group web`).
        resource: String,
        /// How it failed, for the retry decision.
        kind: FailureKind,
        /// AWS's error code (`Throttling`, `ValidationError`), when it sent one.
        code: Option<String>,
        /// The HTTP status, when an answer arrived.
        status: Option<u16>,
        /// AWS's message, or the description of the transport failure.
        message: String,
    },
    /// No usable answer: the endpoint refused or dropped the connection, or
    /// did not answer within the calls' time limits.
    #[error("{}", unreachable_text(call, resource, *kind, endpoint, cause))]
    Unreachable {
        /// The call, in IAM spelling.
        call: &'static str,
        /// What it was about.
        resource: String,
        /// [`FailureKind::Dispatch`] or [`FailureKind::Timeout`].
        kind: FailureKind,
        /// The URL the call went to; empty when not known.
        endpoint: String,
        /// What happened, in plain words (`connection refused`).
        cause: String,
    },
    /// The resource the call names does not exist (an unknown group, launch
    /// template, version, image or instance).
    #[error("{call}: {resource} does not exist{}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    NotFound {
        /// The call, in IAM spelling.
        call: &'static str,
        /// The missing resource (`group web`).
        resource: String,
        /// AWS's message, if it sent one.
        message: String,
    },
    /// AWS answered, but the answer lacks something the call needs, or the
    /// request asked for something the model forbids.
    #[error("{call} on {resource}: {message}")]
    Unexpected {
        /// The call, in IAM spelling.
        call: &'static str,
        /// What it was about.
        resource: String,
        /// What was wrong.
        message: String,
    },
}

/// The service a call (in IAM spelling) goes to, as AWS names it.
fn service_of(call: &str) -> &'static str {
    match call.split(':').next() {
        Some("ec2") => "EC2",
        Some("autoscaling") => "Auto Scaling",
        _ => "AWS",
    }
}

/// Where the endpoint comes from, for "check …".
const CHECK_ENDPOINT: &str = "check coordinator.aws_endpoint (or AWS_ENDPOINT_URL), \
     coordinator.aws_region (or AWS_REGION) and the network path to it";

fn unreachable_text(
    call: &str,
    resource: &str,
    kind: FailureKind,
    endpoint: &str,
    cause: &str,
) -> String {
    let service = service_of(call);
    let at = if endpoint.is_empty() {
        format!("{service} (endpoint not known)")
    } else {
        format!("{service} at {endpoint}")
    };
    if kind == FailureKind::Timeout {
        format!("{at} did not answer {call} on {resource} in time ({cause}); {CHECK_ENDPOINT}")
    } else {
        format!("cannot reach {at} for {call} on {resource}: {cause}; {CHECK_ENDPOINT}")
    }
}

/// What to check after AWS refused a call, by its code.
fn hint(call: &str, kind: FailureKind, code: Option<&str>, status: Option<u16>) -> String {
    const CREDENTIALS: &[&str] = &[
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "MissingAuthenticationToken",
    ];
    if kind == FailureKind::Construction {
        return "; check the AWS credentials (environment, profile or instance role) and \
                coordinator.aws_region"
            .into();
    }
    match code {
        Some(c) if CREDENTIALS.contains(&c) => {
            "; check the AWS credentials (environment, profile or instance role)".into()
        }
        Some(c) if c.contains("Unauthorized") || c.contains("AccessDenied") => {
            format!("; check that the IAM policy of the credentials allows {call} (infra/iam.tf)")
        }
        _ if status == Some(403) => {
            format!("; check that the IAM policy of the credentials allows {call} (infra/iam.tf)")
        }
        _ => String::new(),
    }
}

fn describe_code(code: Option<&str>, status: Option<u16>) -> String {
    match (code, status) {
        (Some(code), Some(status)) => format!(" ({code}, HTTP {status})"),
        (Some(code), None) => format!(" ({code})"),
        (None, Some(status)) => format!(" (HTTP {status})"),
        (None, None) => String::new(),
    }
}

impl Error {
    /// Whether the same call may succeed later; see [`is_retryable_failure`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api {
                kind, code, status, ..
            } => is_retryable_failure(*kind, code.as_deref(), *status),
            Error::Unreachable { kind, .. } => is_retryable_failure(*kind, None, None),
            Error::NotFound { .. } | Error::Unexpected { .. } => false,
        }
    }

    /// The call that failed, in IAM spelling.
    pub fn call(&self) -> &'static str {
        match self {
            Error::Api { call, .. }
            | Error::Unreachable { call, .. }
            | Error::NotFound { call, .. }
            | Error::Unexpected { call, .. } => call,
        }
    }

    /// The resource the failed call was about.
    pub fn resource(&self) -> &str {
        match self {
            Error::Api { resource, .. }
            | Error::Unreachable { resource, .. }
            | Error::NotFound { resource, .. }
            | Error::Unexpected { resource, .. } => resource,
        }
    }

    /// AWS's error code, when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The same error, naming `endpoint` as where the call went when it
    /// got no answer (the client that made the call knows its endpoint;
    /// the SDK's error does not).
    pub fn at(self, endpoint: &str) -> Self {
        match self {
            Error::Unreachable {
                call,
                resource,
                kind,
                endpoint: known,
                cause,
            } if known.is_empty() => Error::Unreachable {
                call,
                resource,
                kind,
                endpoint: endpoint.to_owned(),
                cause,
            },
            other => other,
        }
    }

    /// Whether this says the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// An error for a call whose answer lacked something.
    pub(crate) fn unexpected(
        call: &'static str,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Unexpected {
            call,
            resource: resource.into(),
            message: message.into(),
        }
    }

    /// An error for a resource that does not exist.
    pub(crate) fn not_found(
        call: &'static str,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::NotFound {
            call,
            resource: resource.into(),
            message: message.into(),
        }
    }

    /// Converts an SDK error of any EC2 or Auto Scaling operation.
    ///
    /// Codes that say a resource is missing (`InvalidAMIID.NotFound`,
    /// `InvalidLaunchTemplateId.VersionNotFound`, Auto Scaling's
    /// `ValidationError` "... not found") become [`Error::NotFound`].
    pub(crate) fn from_sdk<E>(
        call: &'static str,
        resource: impl Into<String>,
        err: SdkError<E, HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let kind = match &err {
            SdkError::ConstructionFailure(_) => FailureKind::Construction,
            SdkError::TimeoutError(_) => FailureKind::Timeout,
            SdkError::DispatchFailure(d) if d.is_user() => FailureKind::Construction,
            SdkError::DispatchFailure(d) if d.is_timeout() => FailureKind::Timeout,
            SdkError::DispatchFailure(_) => FailureKind::Dispatch,
            SdkError::ResponseError(_) => FailureKind::Response,
            SdkError::ServiceError(_) => FailureKind::Service,
            _ => FailureKind::Dispatch,
        };
        if matches!(kind, FailureKind::Timeout | FailureKind::Dispatch) {
            return Error::Unreachable {
                call,
                resource: resource.into(),
                kind,
                endpoint: String::new(),
                cause: plain_cause(&err),
            };
        }
        let code = err.code().map(str::to_owned);
        let message = match (kind, err.message()) {
            (FailureKind::Service, Some(message)) => message.to_owned(),
            (FailureKind::Service | FailureKind::Response, None) => match status {
                Some(status) => format!("an answer that is not AWS's (HTTP {status})"),
                None => plain_cause(&err),
            },
            _ => plain_cause(&err),
        };
        if kind == FailureKind::Service
            && code
                .as_deref()
                .is_some_and(|c| means_not_found(c, &message))
        {
            return Error::not_found(call, resource, message);
        }
        Error::Api {
            call,
            resource: resource.into(),
            kind,
            code,
            status,
            message,
        }
    }
}

/// What went wrong with a call, in plain words: the I/O failure at the
/// bottom of the SDK's error chain when there is one ("connection
/// refused"), else the innermost message. Never a `Debug` dump.
fn plain_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return match io.kind() {
                K::ConnectionRefused => "connection refused".into(),
                K::ConnectionReset => "the connection was reset".into(),
                K::ConnectionAborted => "the connection was aborted".into(),
                K::TimedOut => "the connection timed out".into(),
                K::UnexpectedEof => "the connection closed before an answer".into(),
                K::NotFound => "the host name does not resolve".into(),
                _ => io.to_string(),
            };
        }
        let text = e.to_string();
        if !text.is_empty() {
            innermost = text;
        }
        next = e.source();
    }
    innermost
}

/// Whether an AWS error code (and, for Auto Scaling's catch-all
/// `ValidationError`, its message) says that the named resource is missing.
pub fn means_not_found(code: &str, message: &str) -> bool {
    code.ends_with(".NotFound")
        || code.ends_with("NotFoundException")
        || code.ends_with(".VersionNotFound")
        || (code == "ValidationError" && message.to_ascii_lowercase().contains("not found"))
}

#[cfg(test)]
mod tests;
