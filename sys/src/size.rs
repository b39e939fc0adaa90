//! Sizes in bytes as users write them: `65536`, `64KiB`, `64k`, `1MiB`, `1.5k`. Parsed by
//! the `parse-size` crate in its binary mode, so `k`, `K`, `KB` and `KiB` all mean 1024
//! (what ringway has always meant by them, and what a buffer or head limit means).

use crate::ValueError;

const PARSER: parse_size::Config = parse_size::Config::new().with_binary();

/// Parses a byte count: a bare number, or a number with `k`/`KiB`/`KB`, `m`/`MiB`/`MB`,
/// `g`/`GiB`/`GB` (all powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    PARSER
        .parse_size(s.trim())
        .map_err(|_| ValueError::Size(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units() {
        for (s, n) in [
            ("65536", 65536),
            ("64KiB", 64 << 10),
            ("64k", 64 << 10),
            ("64K", 64 << 10),
            ("64kb", 64 << 10),
            ("8 KiB", 8 << 10),
            ("1MiB", 1 << 20),
            ("1m", 1 << 20),
            ("16MiB", 16 << 20),
            ("1.5k", 1536),
            ("100b", 100),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_size() {
        for bad in [
            "",
            "lots",
            "12 parsecs",
            "-1",
            "1x",
            "99999999999999999999999",
        ] {
            assert_eq!(
                parse_size(bad),
                Err(ValueError::Size(bad.to_string())),
                "{bad}"
            );
        }
    }
}
