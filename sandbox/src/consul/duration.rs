//! Go's duration syntax, as Consul reads and prints it (`10s`, `1m30s`,
//! `1.5h`, `500ms`; printed as `24h0m0s`).
//!
//! Consul parses every duration with Go's `time.ParseDuration` and prints
//! them with `time.Duration.String`, and a few of its error messages embed
//! both; matching them lets clients see the same text as from a real agent.
//! This module must never accept a syntax Go rejects (a bare `10` is an
//! error, as in Consul), so clients cannot come to depend on it.

use std::time::Duration;

/// Why a duration string was rejected, worded as Go's `time` package words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration at all.
    #[error("time: invalid duration \"{0}\"")]
    Invalid(String),
    /// A number without a unit (`10`).
    #[error("time: missing unit in duration \"{0}\"")]
    MissingUnit(String),
    /// A unit Go does not know.
    #[error("time: unknown unit \"{unit}\" in duration \"{input}\"")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// A negative duration, which no Consul field this server reads accepts.
    #[error("time: negative duration \"{0}\" is not allowed here")]
    Negative(String),
}

const NANOS_PER: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration string (`"10s"`, `"1m30s"`, `"0"`).
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_string());
    let mut rest = input;
    if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    } else if rest.starts_with('-') {
        return Err(DurationError::Negative(input.to_string()));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after_num
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after_num.len(), |(i, _)| i);
        let (unit, after_unit) = after_num.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let per = NANOS_PER
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, per)| *per)
            .ok_or_else(|| DurationError::UnknownUnit {
                unit: unit.to_string(),
                input: input.to_string(),
            })?;
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut frac_nanos: u128 = 0;
        let mut scale: u128 = 1;
        for digit in frac_part.bytes().take(18) {
            frac_nanos = frac_nanos * 10 + u128::from(digit - b'0');
            scale *= 10;
        }
        total = whole
            .checked_mul(per)
            .and_then(|w| w.checked_add(frac_nanos * per / scale))
            .and_then(|t| t.checked_add(total))
            .ok_or_else(invalid)?;
        rest = after_unit;
    }
    u64::try_from(total)
        .map(Duration::from_nanos)
        .map_err(|_| invalid())
}

/// Formats like Go's `time.Duration.String` (`24h0m0s`, `10s`, `1.5ms`).
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / unit` with the fractional digits Go prints (trailing zeros cut).
fn fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let rest = value % unit;
    if rest == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_go_rejects() {
        assert_eq!(parse("10"), Err(DurationError::MissingUnit("10".into())));
        assert_eq!(parse(""), Err(DurationError::Invalid(String::new())));
        assert_eq!(parse("abc"), Err(DurationError::Invalid("abc".into())));
        assert!(matches!(
            parse("10x"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert_eq!(
            parse("10x").map_err(|e| e.to_string()),
            Err("time: unknown unit \"x\" in duration \"10x\"".to_string())
        );
        assert!(parse("-1s").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(86_400)), "24h0m0s");
        assert_eq!(format(Duration::from_secs(10)), "10s");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_millis(1)), "1ms");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
