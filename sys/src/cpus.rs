//! CPU lists as `taskset`, `/sys/devices/system/cpu/online` and ringway's `--cpus` write
//! them: `0-3,8,10-11`. Parsed into sorted, distinct CPU numbers; a CPU listed twice, a
//! backwards range or an empty item is refused (each is more likely a typo than a wish).
//! Whether the CPUs exist is the caller's question.

use crate::ValueError;

/// The widest range accepted in one item (`0-4096`), so a typo cannot allocate gigabytes.
const MAX_RANGE: usize = 4096;

/// Parses a CPU list such as `0-3,8,10-11` into sorted, distinct CPU numbers.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, ValueError> {
    let bad = |why: String| ValueError::CpuList {
        list: s.to_string(),
        why,
    };
    let num = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|_| bad(format!("'{}' is not a CPU number", x.trim())))
    };
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad("empty item".into()));
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(bad(format!("range {a}-{b} is backwards")));
                }
                if b - a > MAX_RANGE {
                    return Err(bad(format!("range {a}-{b} is too large")));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    cpus.sort_unstable();
    let before = cpus.len();
    cpus.dedup();
    if cpus.len() != before {
        return Err(bad("a CPU is listed twice".into()));
    }
    Ok(cpus)
}

/// Writes sorted CPU numbers back as a list: `[0, 1, 2, 5]` is `0-2,5`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_print_back() {
        assert_eq!(parse_cpu_list("0-2,5"), Ok(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list("3, 1"), Ok(vec![1, 3]));
        assert_eq!(parse_cpu_list("7"), Ok(vec![7]));
        assert_eq!(format_cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(format_cpu_list(&[]), "");
    }

    #[test]
    fn bad_lists_say_why() {
        for (bad, why) in [
            ("", "empty item"),
            ("1,", "empty item"),
            ("a", "'a' is not a CPU number"),
            ("zero", "not a CPU number"),
            ("3-1", "backwards"),
            ("0-99999", "too large"),
            ("0,0", "listed twice"),
            ("0-2,1", "listed twice"),
        ] {
            let e = parse_cpu_list(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("example: 0-3,8"), "{bad}: {e}");
        }
    }
}
