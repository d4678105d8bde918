//! How the app behaves, read from the environment.
//!
//! The sandbox's fleet simulator starts one `web` per simulated instance and
//! decides through these variables whether the image it "runs" is good or
//! broken. A value that cannot be understood is an error naming the variable
//! and the value: a typo must never silently turn a broken image into a good
//! one. This module only parses; it never reads the clock or serves anything.

use std::time::Duration;

/// Environment variable that overrides the version the app reports.
pub const VAR_VERSION: &str = "WEB_VERSION";
/// Environment variable: how long the app takes to boot (humantime duration).
pub const VAR_BOOT_DELAY: &str = "WEB_BOOT_DELAY";
/// Environment variable: `1` makes `/health` answer 500 forever.
pub const VAR_FAIL_HEALTH: &str = "WEB_FAIL_HEALTH";
/// Environment variable: turn unhealthy this long after becoming ready.
pub const VAR_FAIL_AFTER: &str = "WEB_FAIL_AFTER";

/// What the app reports and how it misbehaves, as the image it stands for
/// would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The version named by `/` and `/version`; the rollout and the load
    /// generator use it to tell which image answered.
    pub version: String,
    /// Time from start until the app serves anything: simulates a slow boot, so
    /// the rollout's health gate has something to wait for.
    pub boot_delay: Duration,
    /// Health answers 500 forever once booted: simulates an image that never
    /// becomes healthy, which the rollout must catch and not retire old
    /// instances for.
    pub fail_health: bool,
    /// Health turns to 500 this long after the app became ready: simulates an
    /// image that passes the gate and breaks later, which the health watcher
    /// must alert on.
    pub fail_after: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            boot_delay: Duration::ZERO,
            fail_health: false,
            fail_after: None,
        }
    }
}

/// A setting from the environment could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The variable is set, but its value breaks the rule given.
    #[error("invalid {var}={value:?}: {rule}")]
    Invalid {
        /// Name of the environment variable.
        var: &'static str,
        /// The value as found (lossily decoded when it was not UTF-8).
        value: String,
        /// What a valid value looks like, and why this one is not.
        rule: String,
    },
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| {
            std::env::var_os(name).map(|v| {
                v.into_string()
                    .map_err(|raw| raw.to_string_lossy().into_owned())
            })
        })
    }

    /// Reads the settings through `lookup`, which returns `None` for an unset
    /// variable, `Some(Ok(value))` for a set one and `Some(Err(lossy))` for a
    /// value that is not valid UTF-8. Tests pass their own map.
    pub fn from_lookup<F>(lookup: F) -> Result<Self, SettingsError>
    where
        F: Fn(&str) -> Option<Result<String, String>>,
    {
        let get = |var: &'static str| -> Result<Option<String>, SettingsError> {
            match lookup(var) {
                None => Ok(None),
                Some(Ok(value)) => Ok(Some(value)),
                Some(Err(lossy)) => Err(SettingsError::Invalid {
                    var,
                    value: lossy,
                    rule: "the value is not valid UTF-8".to_owned(),
                }),
            }
        };

        let mut settings = Self::default();
        if let Some(version) = get(VAR_VERSION)? {
            if version.trim().is_empty() {
                return Err(SettingsError::Invalid {
                    var: VAR_VERSION,
                    value: version,
                    rule: "must not be empty; unset it to report the crate version".to_owned(),
                });
            }
            settings.version = version;
        }
        if let Some(value) = get(VAR_BOOT_DELAY)? {
            settings.boot_delay = parse_duration(VAR_BOOT_DELAY, value)?;
        }
        if let Some(value) = get(VAR_FAIL_HEALTH)? {
            settings.fail_health = parse_flag(VAR_FAIL_HEALTH, value)?;
        }
        if let Some(value) = get(VAR_FAIL_AFTER)? {
            settings.fail_after = Some(parse_duration(VAR_FAIL_AFTER, value)?);
        }
        Ok(settings)
    }
}

/// A humantime duration such as `3s`, `500ms` or `1m 30s`.
fn parse_duration(var: &'static str, value: String) -> Result<Duration, SettingsError> {
    humantime::parse_duration(value.trim()).map_err(|e| SettingsError::Invalid {
        var,
        rule: format!("expected a duration such as 3s, 500ms or 1m 30s ({e})"),
        value,
    })
}

/// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`/empty, case-insensitive.
fn parse_flag(var: &'static str, value: String) -> Result<bool, SettingsError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(SettingsError::Invalid {
            var,
            value,
            rule: "expected 1 or 0 (also true/false, yes/no, on/off)".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned().map(Ok))
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let settings = parse(&[]).expect("empty environment is valid");
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn reads_every_variable() {
        let settings = parse(&[
            (VAR_VERSION, "2.0.0-bad"),
            (VAR_BOOT_DELAY, "1m 30s"),
            (VAR_FAIL_HEALTH, "TRUE"),
            (VAR_FAIL_AFTER, "250ms"),
        ])
        .expect("valid settings");
        assert_eq!(settings.version, "2.0.0-bad");
        assert_eq!(settings.boot_delay, Duration::from_secs(90));
        assert!(settings.fail_health);
        assert_eq!(settings.fail_after, Some(Duration::from_millis(250)));
    }

    #[test]
    fn zero_and_empty_flag_mean_off() {
        for value in ["0", "", "false", "off"] {
            let settings = parse(&[(VAR_FAIL_HEALTH, value)]).expect("valid flag");
            assert!(!settings.fail_health, "{value:?} must mean off");
        }
    }

    #[test]
    fn invalid_values_name_the_variable_and_the_value() {
        let cases = [
            (VAR_BOOT_DELAY, "soon"),
            (VAR_BOOT_DELAY, "3"),
            (VAR_FAIL_AFTER, "-1s"),
            (VAR_FAIL_HEALTH, "maybe"),
            (VAR_VERSION, "  "),
        ];
        for (var, value) in cases {
            let err = parse(&[(var, value)]).expect_err("must be rejected");
            let message = err.to_string();
            assert!(message.contains(var), "{message}");
            assert!(message.contains(&format!("{value:?}")), "{message}");
        }
    }

    #[test]
    fn non_utf8_value_is_an_error() {
        let err = Settings::from_lookup(|name| {
            (name == VAR_BOOT_DELAY).then(|| Err("3\u{FFFD}s".to_owned()))
        })
        .expect_err("must be rejected");
        assert!(err.to_string().contains(VAR_BOOT_DELAY));
    }
}
