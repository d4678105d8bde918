//! The SDK configuration [`super::SdkFleet`] and the registry are built
//! from: the standard AWS chain for production, a fixed one for emulators.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Time to open a connection to an AWS endpoint. AWS accepts in
/// milliseconds; an endpoint that does not is down or filtered.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Time from sending a request to the first byte of the answer, and the
/// limit of one attempt. The calls rollgate makes (describe, tag, update a
/// group, one page of instances) answer in well under a second, a few at
/// most under load; an endpoint that accepts and stays silent is cut here.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);

/// The limit of one call with the SDK's own quick retries: the second
/// attempt of a silent endpoint is cut here, so every command that talks
/// to AWS fails with a message within seconds. Slower patience (throttling
/// storms) is [`crate::aws::retry::Retrying`]'s, between calls.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(12);

/// The time limits of every AWS call (see the constants above).
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(ATTEMPT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The SDK configuration for production: the standard AWS chain, with an
/// optional region and endpoint override (`None` leaves them to
/// `AWS_REGION`/profile and `AWS_ENDPOINT_URL`), and [`timeouts`] on every
/// call.
pub async fn load_config(region: Option<&str>, endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts());
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
/// Where EC2 calls made with `config` go: the endpoint override, else what
/// the SDK's own resolver makes of the region. Empty when neither tells.
pub fn ec2_endpoint(config: &SdkConfig) -> String {
    use aws_sdk_ec2::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
    use futures::FutureExt as _;
    let params = Params::builder()
        .set_region(config.region().map(ToString::to_string))
        .set_use_fips(config.use_fips())
        .set_use_dual_stack(config.use_dual_stack())
        .set_endpoint(config.endpoint_url().map(str::to_owned))
        .build();
    let url = params.ok().and_then(|p| {
        DefaultResolver::new()
            .resolve_endpoint(&p)
            .now_or_never()
            .and_then(Result::ok)
            .map(|e| e.url().to_owned())
    });
    resolved(config, url)
}

/// Where Auto Scaling calls made with `config` go; see [`ec2_endpoint`].
pub fn autoscaling_endpoint(config: &SdkConfig) -> String {
    use aws_sdk_autoscaling::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
    use futures::FutureExt as _;
    let params = Params::builder()
        .set_region(config.region().map(ToString::to_string))
        .set_use_fips(config.use_fips())
        .set_use_dual_stack(config.use_dual_stack())
        .set_endpoint(config.endpoint_url().map(str::to_owned))
        .build();
    let url = params.ok().and_then(|p| {
        DefaultResolver::new()
            .resolve_endpoint(&p)
            .now_or_never()
            .and_then(Result::ok)
            .map(|e| e.url().to_owned())
    });
    resolved(config, url)
}

/// The URL of a resolution the SDK's resolvers answer at once (they do not
/// wait on anything), else the configured override.
fn resolved(config: &SdkConfig, url: Option<String>) -> String {
    url.map(|u| u.trim_end_matches('/').to_owned())
        .or_else(|| config.endpoint_url().map(str::to_owned))
        .unwrap_or_default()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_endpoint_is_cut_well_within_fifteen_seconds() {
        let t = timeouts();
        assert_eq!(t.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(t.read_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(t.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert!(OPERATION_TIMEOUT < Duration::from_secs(15));
        assert!(ATTEMPT_TIMEOUT < OPERATION_TIMEOUT);
    }

    #[test]
    fn endpoints_are_the_override_or_the_regions_own() {
        let overridden = test_config("http://127.0.0.1:5000", "us-east-1");
        assert_eq!(ec2_endpoint(&overridden), "http://127.0.0.1:5000");
        assert_eq!(autoscaling_endpoint(&overridden), "http://127.0.0.1:5000");
        let regional = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .build();
        assert!(ec2_endpoint(&regional).contains("ec2.eu-west-1."));
        assert!(autoscaling_endpoint(&regional).contains("autoscaling.eu-west-1."));
    }
}
