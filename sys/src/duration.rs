//! Durations as users write them: `humantime`'s syntax (`250ms`, `5s`, `1.5s`, `2m`, `1h`,
//! `100us`, `1h 30m`), plus a bare number meaning seconds (`7`, `0.5`), which ringway has
//! always accepted. Durations are capped at a year, so that no later `Instant + d` can
//! overflow.

use std::time::Duration;

use crate::ValueError;

/// The longest duration accepted anywhere: 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `250ms`, `5s`, `1.5s`, `2m`, `1h`, `100us` (any `humantime` duration); a bare
/// number is seconds. Refuses negative values and anything over [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let t = s.trim();
    let bare_number = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let d = if bare_number {
        t.parse::<f64>()
            .ok()
            .and_then(|v| Duration::try_from_secs_f64(v).ok())
    } else {
        humantime::parse_duration(t).ok()
    };
    match d {
        Some(d) if d <= MAX_DURATION => Ok(d),
        Some(_) => Err(ValueError::DurationTooLong(s.to_string())),
        None => Err(ValueError::Duration(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_ringway_always_accepted() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("2m", Duration::from_secs(120)),
            ("2min", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("100us", Duration::from_micros(100)),
            ("7µs", Duration::from_micros(7)),
            ("1.5s", Duration::from_millis(1500)),
            ("7", Duration::from_secs(7)),
            ("0.25", Duration::from_millis(250)),
            (" 3s ", Duration::from_secs(3)),
            ("0s", Duration::ZERO),
            ("1h 30m", Duration::from_secs(5400)),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "", "ms", ".", "1x", "-1s", "5parsecs", "soon", "1..2", "inf",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(ValueError::Duration(bad.to_string())),
                "{bad}"
            );
        }
        for long in ["366days", "99999999999999999999h", "1e30"] {
            assert!(parse_duration(long).is_err(), "{long}");
        }
        assert!(parse_duration("5parsecs")
            .unwrap_err()
            .to_string()
            .contains("not a duration"));
    }
}
