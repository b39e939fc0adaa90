//! Parsers for the command-line values of `ringway-origin`: durations (`250ms`, `5s`,
//! `1m`) and CPU lists (`0-1,3`). They return a message a user can act on, never panic.

use std::time::Duration;

/// Parses `<number><unit>` with unit `us`, `ms`, `s`, `m` or `h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("bad duration {s:?}: expected a number and a unit, like 250ms, 5s or 1m")
    })?;
    let d = match unit {
        "us" => Some(Duration::from_micros(n)),
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => {
            return Err(format!(
                "bad duration {s:?}: unit must be us, ms, s, m or h"
            ))
        }
    };
    d.ok_or_else(|| format!("duration {s:?} is too long"))
}

/// Parses a CPU list like `0-3,8,10-11` into ascending, distinct CPU numbers.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("bad CPU list {s:?}: expected e.g. 0-3,8,10-11");
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (part, part),
        };
        let lo: usize = lo.parse().map_err(|_| bad())?;
        let hi: usize = hi.parse().map_err(|_| bad())?;
        if lo > hi || hi - lo > 4096 {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("7us"), Ok(Duration::from_micros(7)));
        for bad in ["", "5", "ms", "1x", "-1s", "1.5s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1,3"), Ok(vec![0, 1, 3]));
        assert_eq!(parse_cpu_list("3,1,1"), Ok(vec![1, 3]));
        for bad in ["", "a", "2-1", "1,", "0-99999"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
    }
}
