#![allow(clippy::unwrap_used)]

use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsError;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ConnectorError, ErrorMetadata, SdkError};
use aws_sdk_ec2::operation::describe_images::DescribeImagesError;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;

use super::*;

const CALL: &str = "autoscaling:DescribeAutoScalingGroups";

fn response(status: u16) -> HttpResponse {
    HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty())
}

fn service_error(code: &str, message: &str, status: u16) -> Error {
    let meta = ErrorMetadata::builder().code(code).message(message).build();
    let err = SdkError::service_error(
        DescribeAutoScalingGroupsError::generic(meta),
        response(status),
    );
    Error::from_sdk(CALL, "group web", err)
}

#[test]
fn the_pure_classification() {
    use FailureKind::*;
    for code in [
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ResourceContention",
    ] {
        assert!(
            is_retryable_failure(Service, Some(code), Some(400)),
            "{code}"
        );
    }
    for code in [
        "ValidationError",
        "AccessDenied",
        "UnauthorizedOperation",
        "InvalidAMIID.NotFound",
    ] {
        assert!(
            !is_retryable_failure(Service, Some(code), Some(400)),
            "{code}"
        );
    }
    assert!(is_retryable_failure(
        Service,
        Some("InternalError"),
        Some(500)
    ));
    assert!(is_retryable_failure(Service, None, Some(503)));
    assert!(
        is_retryable_failure(Response, None, Some(500)),
        "moto's HTML 500 page"
    );
    assert!(is_retryable_failure(Response, None, Some(429)));
    assert!(!is_retryable_failure(Response, None, Some(404)));
    assert!(!is_retryable_failure(Response, None, None));
    assert!(is_retryable_failure(Timeout, None, None));
    assert!(is_retryable_failure(Dispatch, None, None));
    assert!(!is_retryable_failure(Construction, None, None));
}

#[test]
fn throttling_from_the_sdk_is_retryable_and_names_call_and_resource() {
    let err = service_error("Throttling", "Rate exceeded", 400);
    assert!(err.is_retryable());
    assert_eq!(err.call(), CALL);
    assert_eq!(err.resource(), "group web");
    assert_eq!(err.code(), Some("Throttling"));
    assert_eq!(
        err.to_string(),
        "autoscaling:DescribeAutoScalingGroups on group web failed (Throttling, HTTP 400): Rate exceeded"
    );
}

#[test]
fn validation_and_access_errors_are_final() {
    let err = service_error("ValidationError", "1 validation error detected", 400);
    assert!(!err.is_retryable());
    assert!(!err.is_not_found());
    let err = service_error("AccessDenied", "User is not authorized", 403);
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("AccessDenied"), "{err}");
}

#[test]
fn missing_resources_become_not_found() {
    let err = service_error(
        "ValidationError",
        "AutoScalingGroup name not found - web",
        400,
    );
    assert!(err.is_not_found());
    assert_eq!(
        err.to_string(),
        "autoscaling:DescribeAutoScalingGroups: group web does not exist (AutoScalingGroup name not found - web)"
    );

    let meta = ErrorMetadata::builder()
        .code("InvalidAMIID.NotFound")
        .message("The image id '[ami-1]' does not exist")
        .build();
    let err = SdkError::service_error(DescribeImagesError::generic(meta), response(400));
    let err = Error::from_sdk("ec2:DescribeImages", "image ami-1", err);
    assert!(err.is_not_found() && !err.is_retryable());
    assert!(
        err.to_string().contains("image ami-1 does not exist"),
        "{err}"
    );
}

#[test]
fn transport_failures_are_retryable_construction_failures_are_not() {
    let timeout: SdkError<DescribeImagesError, HttpResponse> =
        SdkError::timeout_error("operation timed out");
    let err = Error::from_sdk("ec2:DescribeImages", "image ami-1", timeout);
    assert!(err.is_retryable());
    assert!(matches!(
        err,
        Error::Unreachable {
            kind: FailureKind::Timeout,
            ..
        }
    ));

    let io = SdkError::<DescribeImagesError, HttpResponse>::dispatch_failure(ConnectorError::io(
        "connection refused".into(),
    ));
    assert!(Error::from_sdk("ec2:DescribeImages", "x", io).is_retryable());

    let user = SdkError::<DescribeImagesError, HttpResponse>::dispatch_failure(
        ConnectorError::user("bad URL".into()),
    );
    assert!(!Error::from_sdk("ec2:DescribeImages", "x", user).is_retryable());

    let built: SdkError<DescribeImagesError, HttpResponse> =
        SdkError::construction_failure("no region");
    assert!(!Error::from_sdk("ec2:DescribeImages", "x", built).is_retryable());
}

#[test]
fn unparseable_answers_are_judged_by_status() {
    let html = |status| {
        let err: SdkError<DescribeImagesError, HttpResponse> =
            SdkError::response_error("could not parse XML", response(status));
        Error::from_sdk("ec2:DescribeImages", "x", err)
    };
    let err = html(500);
    assert!(err.is_retryable());
    assert!(matches!(
        err,
        Error::Api {
            kind: FailureKind::Response,
            status: Some(500),
            ..
        }
    ));
    assert!(!html(400).is_retryable());
}

#[test]
fn no_answer_names_the_service_endpoint_call_and_what_to_check() {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let io = SdkError::<DescribeImagesError, HttpResponse>::dispatch_failure(ConnectorError::io(
        Box::new(refused),
    ));
    let err = Error::from_sdk("ec2:DescribeImages", "image ami-1", io).at("http://127.0.0.1:9");
    assert_eq!(
        err.to_string(),
        "cannot reach EC2 at http://127.0.0.1:9 for ec2:DescribeImages on image ami-1: \
         connection refused; check coordinator.aws_endpoint (or AWS_ENDPOINT_URL), \
         coordinator.aws_region (or AWS_REGION) and the network path to it"
    );
    // The endpoint named first stays.
    assert!(
        err.at("http://elsewhere")
            .to_string()
            .contains("127.0.0.1:9")
    );

    let timeout: SdkError<DescribeAutoScalingGroupsError, HttpResponse> =
        SdkError::timeout_error("operation timeout occurred after 12s");
    let err = Error::from_sdk(
        "autoscaling:DescribeAutoScalingGroups",
        "group web",
        timeout,
    )
    .at("https://autoscaling.eu-west-1.amazonaws.com");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "Auto Scaling at https://autoscaling.eu-west-1.amazonaws.com did not answer \
             autoscaling:DescribeAutoScalingGroups on group web in time (operation timeout \
             occurred after 12s)"
        ),
        "{text}"
    );
    for debug in ["DispatchFailure", "ConnectorError", "TimeoutError", "Some("] {
        assert!(!text.contains(debug), "{text}");
    }
}

#[test]
fn refusals_say_what_to_check() {
    let meta = ErrorMetadata::builder()
        .code("UnauthorizedOperation")
        .message("You are not authorized to perform this operation.")
        .build();
    let err = SdkError::service_error(DescribeImagesError::generic(meta), response(403));
    let text = Error::from_sdk("ec2:CreateTags", "image ami-1", err).to_string();
    assert!(
        text.ends_with(
            "check that the IAM policy of the credentials allows ec2:CreateTags (infra/iam.tf)"
        ),
        "{text}"
    );
    let meta = ErrorMetadata::builder()
        .code("AuthFailure")
        .message("AWS was not able to validate the provided access credentials")
        .build();
    let err = SdkError::service_error(DescribeImagesError::generic(meta), response(401));
    let text = Error::from_sdk("ec2:DescribeImages", "image ami-1", err).to_string();
    assert!(text.contains("check the AWS credentials"), "{text}");
}
