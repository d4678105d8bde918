//! The SDK configuration [`super::SdkFleet`] and the registry are built
//! from: the standard AWS chain for production, a fixed one for emulators.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The SDK configuration for production: the standard AWS chain, with an
/// optional region and endpoint override (`None` leaves them to
/// `AWS_REGION`/profile and `AWS_ENDPOINT_URL`).
pub async fn load_config(region: Option<&str>, endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(30))
            .operation_timeout(Duration::from_secs(90))
            .build(),
    );
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// The SDK configuration for an emulator at `endpoint_url`: static dummy
/// credentials, SDK retries disabled (an unimplemented call fails at once
/// instead of after seconds of retries), short time-outs. Reads nothing from
/// the environment. Tests only: see the `test-util` feature.
#[cfg(any(test, feature = "test-util"))]
pub fn test_config(endpoint_url: &str, region: &str) -> SdkConfig {
    use aws_config::retry::RetryConfig;
    use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};

    let credentials = Credentials::new("testing", "testing", None, None, "rollgate-test-static");
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint_url)
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .build()
}
