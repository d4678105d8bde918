//! [`Retrying`]: a [`Fleet`] (and [`Registry`]) decorator that retries
//! retryable failures with exponential backoff and jitter.
//!
//! It relies on every [`Fleet`] method being idempotent: a call whose answer
//! was lost may have landed, and repeating it must be harmless. Errors that
//! cannot fix themselves ([`Error::is_retryable`] is false) are returned at
//! once. Sleeping goes through `tokio::time`, so tests with paused time run
//! instantly.
//!
//! It must never retry forever: after [`RetryPolicy::max_attempts`] the last
//! error is returned, and the caller (the rollout executor) decides.

use std::future::Future;
use std::time::Duration;

use super::registry::{Image, Registry};
use super::{Error, Fleet, Group, Instance, LaunchTemplateVersion, Result};

/// How often and how patiently to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// The delay before the first retry, doubled for each further one.
    pub base_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Six attempts, 0.5 s doubling up to 20 s: about 40 s of patience, which
    /// covers AWS throttling bursts without stalling a rollout for long.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (1-based): the
    /// exponential step, capped, with "equal jitter" (half fixed, half random)
    /// so that many clients do not retry in lockstep and no delay is zero.
    pub fn delay(&self, attempt: u32) -> Duration {
        crate::backoff::delay(attempt, self.base_delay, self.max_delay)
    }
}

/// Wraps a [`Fleet`] or [`Registry`] and retries its retryable failures.
#[derive(Debug, Clone)]
pub struct Retrying<F> {
    /// The decorated implementation.
    inner: F,
    /// When to give up.
    policy: RetryPolicy,
}

impl<F> Retrying<F> {
    /// Decorates `inner`.
    pub fn new(inner: F, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    /// The decorated implementation.
    pub fn inner(&self) -> &F {
        &self.inner
    }

    /// Runs `op` (the AWS action `name`) until it succeeds, fails for
    /// good, or runs out of attempts. Each attempt is counted and timed for
    /// `/metrics` (a no-op unless the console installed its metrics).
    async fn run<T, Fut>(&self, name: &'static str, mut op: impl FnMut() -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            let started = std::time::Instant::now();
            let result = op().await;
            crate::console::metrics::aws_call(
                name,
                result.as_ref().map(|_| ()).map_err(Error::is_retryable),
                started.elapsed(),
            );
            match result {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retryable() && attempt < self.policy.max_attempts => {
                    let delay = self.policy.delay(attempt);
                    tracing::warn!(
                        call = error.call(),
                        resource = error.resource(),
                        error = %error,
                        attempt,
                        max_attempts = self.policy.max_attempts,
                        delay = ?delay,
                        "AWS call failed; retrying."
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl<F: Fleet> Fleet for Retrying<F> {
    async fn describe_group(&self, name: &str) -> Result<Group> {
        self.run("DescribeAutoScalingGroups", || {
            self.inner.describe_group(name)
        })
        .await
    }

    async fn describe_groups(&self, names: &[String]) -> Result<Vec<Group>> {
        self.run("DescribeAutoScalingGroups", || {
            self.inner.describe_groups(names)
        })
        .await
    }

    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Instance>> {
        self.run("DescribeInstances", || self.inner.describe_instances(ids))
            .await
    }

    async fn launch_template_version(
        &self,
        template_id: &str,
        version: &str,
    ) -> Result<LaunchTemplateVersion> {
        self.run("DescribeLaunchTemplateVersions", || {
            self.inner.launch_template_version(template_id, version)
        })
        .await
    }

    async fn create_launch_template_version(
        &self,
        base: &LaunchTemplateVersion,
        image_id: &str,
        rollout_id: &str,
    ) -> Result<i64> {
        self.run("CreateLaunchTemplateVersion", || {
            self.inner
                .create_launch_template_version(base, image_id, rollout_id)
        })
        .await
    }

    async fn set_group_launch_template(
        &self,
        group: &str,
        template_id: &str,
        version: i64,
    ) -> Result<()> {
        self.run("UpdateAutoScalingGroup", || {
            self.inner
                .set_group_launch_template(group, template_id, version)
        })
        .await
    }

    async fn set_group_size(&self, group: &str, min: Option<i32>, max: Option<i32>) -> Result<()> {
        self.run("UpdateAutoScalingGroup", || {
            self.inner.set_group_size(group, min, max)
        })
        .await
    }

    async fn set_desired_capacity(&self, group: &str, desired: i32) -> Result<()> {
        self.run("SetDesiredCapacity", || {
            self.inner.set_desired_capacity(group, desired)
        })
        .await
    }

    async fn set_instance_protection(
        &self,
        group: &str,
        ids: &[String],
        protected: bool,
    ) -> Result<()> {
        self.run("SetInstanceProtection", || {
            self.inner.set_instance_protection(group, ids, protected)
        })
        .await
    }

    async fn terminate_instance(&self, id: &str, decrement_desired: bool) -> Result<()> {
        self.run("TerminateInstanceInAutoScalingGroup", || {
            self.inner.terminate_instance(id, decrement_desired)
        })
        .await
    }

    async fn suspend_processes(&self, group: &str, processes: &[String]) -> Result<()> {
        self.run("SuspendProcesses", || {
            self.inner.suspend_processes(group, processes)
        })
        .await
    }

    async fn resume_processes(&self, group: &str, processes: &[String]) -> Result<()> {
        self.run("ResumeProcesses", || {
            self.inner.resume_processes(group, processes)
        })
        .await
    }
}

impl<R: Registry> Registry for Retrying<R> {
    async fn find_images(&self, artifact: &str) -> Result<Vec<Image>> {
        self.run("DescribeImages", || self.inner.find_images(artifact))
            .await
    }

    async fn describe_image(&self, image_id: &str) -> Result<Option<Image>> {
        self.run("DescribeImages", || self.inner.describe_image(image_id))
            .await
    }

    async fn tag_image(&self, image_id: &str, artifact: &str, version: &str) -> Result<()> {
        self.run("CreateTags", || {
            self.inner.tag_image(image_id, artifact, version)
        })
        .await
    }
}

/// Keeps the compiler honest about [`Error`] being `Send`, which the futures
/// above rely on.
const _: fn() = || {
    fn send<T: Send + Sync>() {}
    send::<Error>();
};

#[cfg(test)]
mod tests;
