//! The start-up check for `RLIMIT_MEMLOCK`: glommio refuses to build an executor below
//! 512 KiB but only says so at `join()`, so the origin checks first and tells the user
//! what to change. Reads `/proc/self/limits` (no `unsafe` needed); when that cannot be
//! read, the check passes and glommio has the last word.

/// The least `RLIMIT_MEMLOCK` glommio accepts, in bytes.
pub const MIN_MEMLOCK: u64 = 512 << 10;

/// Fails with instructions when the soft memlock limit is below [`MIN_MEMLOCK`].
pub fn check() -> Result<(), String> {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return Ok(());
    };
    match soft_limit(&limits) {
        Some(limit) if limit < MIN_MEMLOCK => Err(format!(
            "RLIMIT_MEMLOCK is {} KiB but glommio (io_uring) needs at least {} KiB: \
             raise it with `ulimit -l {}` (or `LimitMEMLOCK=` in a systemd unit, \
             `--ulimit memlock=-1` for docker)",
            limit >> 10,
            MIN_MEMLOCK >> 10,
            (MIN_MEMLOCK >> 10) * 2,
        )),
        _ => Ok(()),
    }
}

/// The soft "Max locked memory" limit in bytes; `None` when unlimited or unknown.
fn soft_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    let soft = line
        .trim_start_matches("Max locked memory")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        let text = "Limit Soft Limit Hard Limit Units\n\
                    Max locked memory         65536                65536                bytes\n";
        assert_eq!(soft_limit(text), Some(65536));
        let text = "Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(soft_limit(text), None);
    }
}
