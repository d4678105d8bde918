//! What an AMI's tags make a simulated instance do: the image's version and
//! artifact (the tags rollgate's registry reads) and the sandbox behaviour
//! tags, turned into the `web` app's environment.
//!
//! Parsing is strict: a tag under `sandbox:` that is not known, or a value
//! that cannot be understood, is an error naming the tag and the value, so a
//! typo can never silently turn a broken image into a good one.

use std::time::Duration;

pub use crate::moto::seed::{ARTIFACT_TAG, VERSION_TAG};

/// Behaviour tag: how long the app takes to boot (a humantime duration such
/// as `3s`), passed to the app as `WEB_BOOT_DELAY`. Until then it answers
/// 503 everywhere and its health check is critical.
pub const BOOT_DELAY_TAG: &str = "sandbox:boot-delay";
/// Behaviour tag: `true` makes the app's `/health` answer 500 forever
/// (`WEB_FAIL_HEALTH=1`): an image that never becomes healthy. `false` (or
/// `1`/`0`, `yes`/`no`, `on`/`off`) is accepted too.
pub const BROKEN_TAG: &str = "sandbox:broken";
/// Behaviour tag: the app turns unhealthy this long after it became ready
/// (a humantime duration, `WEB_FAIL_AFTER`): an image that passes the
/// rollout's gate and breaks later.
pub const FAIL_AFTER_TAG: &str = "sandbox:fail-after";
/// Behaviour tag: the version the app reports instead of the image's
/// `rollgate:version` (`WEB_VERSION`): a half-baked image whose app is not
/// the one the image claims, which the agent's probe reports as critical.
pub const VERSION_OVERRIDE_TAG: &str = "sandbox:version-override";

/// Every tag under the `sandbox:` prefix the simulator understands.
pub const BEHAVIOUR_TAGS: [&str; 4] = [
    BOOT_DELAY_TAG,
    BROKEN_TAG,
    FAIL_AFTER_TAG,
    VERSION_OVERRIDE_TAG,
];

/// Why an image cannot be simulated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// `ec2:DescribeImages` failed.
    #[error("cannot describe image {image}: {message}")]
    Describe {
        /// The AMI id.
        image: String,
        /// What the SDK said.
        message: String,
    },
    /// The image does not exist (any more).
    #[error("image {0} does not exist")]
    NotFound(String),
    /// A tag every simulated image needs is missing.
    #[error("the image has no {0} tag")]
    MissingTag(&'static str),
    /// A tag under `sandbox:` that the simulator does not know.
    #[error("unknown behaviour tag {0:?} (known: {known})", known = BEHAVIOUR_TAGS.join(", "))]
    UnknownTag(String),
    /// A tag's value cannot be understood.
    #[error("invalid tag {tag}={value:?}: {rule}")]
    Invalid {
        /// The tag key.
        tag: &'static str,
        /// The value found.
        value: String,
        /// What a valid value looks like.
        rule: String,
    },
}

/// What an image's tags make its instances do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBehaviour {
    /// `rollgate:artifact`, empty when the image has none (the agent then
    /// puts no artifact in the service Meta).
    pub artifact: String,
    /// `rollgate:version`: the version the agent expects the app to report.
    pub version: String,
    /// The version the app reports: [`VERSION_OVERRIDE_TAG`] when set,
    /// else [`Self::version`].
    pub reported_version: String,
    /// [`BOOT_DELAY_TAG`], zero when not set.
    pub boot_delay: Duration,
    /// [`BROKEN_TAG`].
    pub broken: bool,
    /// [`FAIL_AFTER_TAG`].
    pub fail_after: Option<Duration>,
}

impl ImageBehaviour {
    /// Reads the behaviour from an image's tags (key, value). Tags outside
    /// the `rollgate:` and `sandbox:` prefixes are ignored.
    pub fn from_tags<'a, I>(tags: I) -> Result<Self, ImageError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut artifact = String::new();
        let mut version = None;
        let mut version_override = None;
        let mut boot_delay = Duration::ZERO;
        let mut broken = false;
        let mut fail_after = None;
        for (key, value) in tags {
            match key {
                ARTIFACT_TAG => artifact = value.trim().to_owned(),
                VERSION_TAG => version = Some(value.trim().to_owned()),
                BOOT_DELAY_TAG => boot_delay = duration(BOOT_DELAY_TAG, value)?,
                BROKEN_TAG => broken = flag(BROKEN_TAG, value)?,
                FAIL_AFTER_TAG => fail_after = Some(duration(FAIL_AFTER_TAG, value)?),
                VERSION_OVERRIDE_TAG => {
                    if value.trim().is_empty() {
                        return Err(ImageError::Invalid {
                            tag: VERSION_OVERRIDE_TAG,
                            value: value.to_owned(),
                            rule: "must not be empty; remove the tag to report the image's version"
                                .to_owned(),
                        });
                    }
                    version_override = Some(value.trim().to_owned());
                }
                other if other.starts_with("sandbox:") => {
                    return Err(ImageError::UnknownTag(other.to_owned()));
                }
                _ => {}
            }
        }
        let version = version
            .filter(|v| !v.is_empty())
            .ok_or(ImageError::MissingTag(VERSION_TAG))?;
        Ok(Self {
            artifact,
            reported_version: version_override.unwrap_or_else(|| version.clone()),
            version,
            boot_delay,
            broken,
            fail_after,
        })
    }

    /// The `web` app's environment for this behaviour (see the app's
    /// `settings` module).
    pub fn web_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("WEB_VERSION".to_owned(), self.reported_version.clone())];
        if !self.boot_delay.is_zero() {
            env.push((
                "WEB_BOOT_DELAY".to_owned(),
                format!("{}ms", self.boot_delay.as_millis()),
            ));
        }
        if self.broken {
            env.push(("WEB_FAIL_HEALTH".to_owned(), "1".to_owned()));
        }
        if let Some(after) = self.fail_after {
            env.push((
                "WEB_FAIL_AFTER".to_owned(),
                format!("{}ms", after.as_millis()),
            ));
        }
        env
    }
}

fn duration(tag: &'static str, value: &str) -> Result<Duration, ImageError> {
    humantime::parse_duration(value.trim()).map_err(|e| ImageError::Invalid {
        tag,
        value: value.to_owned(),
        rule: format!("expected a duration such as 3s, 500ms or 1m 30s ({e})"),
    })
}

fn flag(tag: &'static str, value: &str) -> Result<bool, ImageError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ImageError::Invalid {
            tag,
            value: value.to_owned(),
            rule: "expected true or false".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tags: &[(&str, &str)]) -> Result<ImageBehaviour, ImageError> {
        ImageBehaviour::from_tags(tags.iter().copied())
    }

    #[test]
    fn a_plain_image_reports_its_version() {
        let b = parse(&[
            (ARTIFACT_TAG, "acmeinc/web"),
            (VERSION_TAG, "1.0.0"),
            ("Name", "ignored"),
        ])
        .expect("valid");
        assert_eq!(b.artifact, "acmeinc/web");
        assert_eq!(b.version, "1.0.0");
        assert_eq!(b.reported_version, "1.0.0");
        assert!(!b.broken);
        assert_eq!(b.web_env(), vec![("WEB_VERSION".into(), "1.0.0".into())]);
    }

    #[test]
    fn behaviour_tags_become_the_apps_environment() {
        let b = parse(&[
            (VERSION_TAG, "1.1.0"),
            (BOOT_DELAY_TAG, "3s"),
            (BROKEN_TAG, "TRUE"),
            (FAIL_AFTER_TAG, "1m 30s"),
            (VERSION_OVERRIDE_TAG, "1.0.9"),
        ])
        .expect("valid");
        assert_eq!(b.version, "1.1.0");
        assert_eq!(b.reported_version, "1.0.9");
        let env = b.web_env();
        for expected in [
            ("WEB_VERSION", "1.0.9"),
            ("WEB_BOOT_DELAY", "3000ms"),
            ("WEB_FAIL_HEALTH", "1"),
            ("WEB_FAIL_AFTER", "90000ms"),
        ] {
            assert!(
                env.iter()
                    .any(|(k, v)| (k.as_str(), v.as_str()) == expected),
                "{expected:?} in {env:?}"
            );
        }
    }

    #[test]
    fn broken_false_is_a_good_image() {
        let b = parse(&[(VERSION_TAG, "1"), (BROKEN_TAG, "false")]).expect("valid");
        assert!(!b.broken);
        assert!(!b.web_env().iter().any(|(k, _)| k == "WEB_FAIL_HEALTH"));
    }

    #[test]
    fn typos_and_bad_values_are_errors_naming_the_tag() {
        for tags in [
            vec![(VERSION_TAG, "1"), ("sandbox:brokn", "true")],
            vec![(VERSION_TAG, "1"), (BROKEN_TAG, "maybe")],
            vec![(VERSION_TAG, "1"), (BOOT_DELAY_TAG, "3")],
            vec![(VERSION_TAG, "1"), (FAIL_AFTER_TAG, "soon")],
            vec![(VERSION_TAG, "1"), (VERSION_OVERRIDE_TAG, " ")],
        ] {
            let err = parse(&tags).expect_err("must be rejected");
            assert!(err.to_string().contains(tags[1].0), "{err}");
        }
    }

    #[test]
    fn an_image_without_a_version_cannot_be_simulated() {
        assert_eq!(
            parse(&[(ARTIFACT_TAG, "acmeinc/web")]),
            Err(ImageError::MissingTag(VERSION_TAG))
        );
        assert_eq!(
            parse(&[(VERSION_TAG, "")]),
            Err(ImageError::MissingTag(VERSION_TAG))
        );
    }
}
