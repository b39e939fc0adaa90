//! The start-up check for `RLIMIT_MEMLOCK`. glommio refuses to build an executor when the
//! locked-memory limit is below 512 KiB, and says so only when the executor is joined, in
//! words that do not say what to change. Every ringway program (the proxy, `ringway-bench`,
//! `ringway-origin`) calls [`check`] first and, below the floor, prints [`MemlockError`]:
//! one message, one `ulimit -l` value, the one `docs/tuning.md` gives.
//!
//! The limit is read from `/proc/self/limits` (no `unsafe`); when that cannot be read, the
//! check passes and glommio has the last word.

/// The least `RLIMIT_MEMLOCK` glommio accepts, in KiB; also the value the advice names.
/// ringway's programs ask glommio for small `io_memory`, so this floor is enough
/// (docs/tuning.md: 16 shards started with exactly 512 KiB).
pub const MIN_MEMLOCK_KIB: u64 = 512;

/// The soft memlock limit is below [`MIN_MEMLOCK_KIB`]; the message says how to raise it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RLIMIT_MEMLOCK is {have_kib} KiB; ringway's io_uring rings need at least {need_kib} KiB of locked memory per process. Raise it with `ulimit -l {need_kib}` (or more) in this shell, `LimitMEMLOCK=infinity` in the systemd unit, or `memlock` in /etc/security/limits.conf")]
pub struct MemlockError {
    /// The soft limit now, in KiB.
    pub have_kib: u64,
    /// What is needed, in KiB: [`MIN_MEMLOCK_KIB`].
    pub need_kib: u64,
}

/// Fails with instructions when this process's soft memlock limit is below
/// [`MIN_MEMLOCK_KIB`]. Passes when the limit cannot be read.
pub fn check() -> Result<(), MemlockError> {
    match std::fs::read_to_string("/proc/self/limits") {
        Ok(limits) => check_limits(&limits),
        Err(_) => Ok(()),
    }
}

/// [`check`] on the text of a `/proc/<pid>/limits` file.
pub fn check_limits(limits: &str) -> Result<(), MemlockError> {
    match soft_limit_kib(limits) {
        Some(have_kib) if have_kib < MIN_MEMLOCK_KIB => Err(MemlockError {
            have_kib,
            need_kib: MIN_MEMLOCK_KIB,
        }),
        _ => Ok(()),
    }
}

/// The soft "Max locked memory" limit in KiB; `None` when unlimited or not found.
pub fn soft_limit_kib(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    let soft = line
        .trim_start_matches("Max locked memory")
        .split_whitespace()
        .next()?;
    soft.parse::<u64>().ok().map(|bytes| bytes / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "Limit                     Soft Limit           Hard Limit           Units\n\
                        Max processes             63704                63704                processes\n";

    #[test]
    fn reads_the_soft_limit() {
        let low = format!(
            "{HEAD}Max locked memory         65536                8388608              bytes\n"
        );
        assert_eq!(soft_limit_kib(&low), Some(64));
        let none = format!(
            "{HEAD}Max locked memory         unlimited            unlimited            bytes\n"
        );
        assert_eq!(soft_limit_kib(&none), None);
        assert_eq!(soft_limit_kib(HEAD), None);
    }

    #[test]
    fn below_the_floor_the_message_says_what_to_run() {
        let low = format!(
            "{HEAD}Max locked memory         65536                65536                bytes\n"
        );
        let e = check_limits(&low).unwrap_err();
        assert_eq!(
            e,
            MemlockError {
                have_kib: 64,
                need_kib: 512
            }
        );
        let msg = e.to_string();
        assert!(msg.starts_with("RLIMIT_MEMLOCK is 64 KiB;"), "{msg}");
        assert!(msg.contains("`ulimit -l 512`"), "{msg}");
        let enough = format!(
            "{HEAD}Max locked memory         524288               524288               bytes\n"
        );
        assert_eq!(check_limits(&enough), Ok(()));
        let unlimited = format!(
            "{HEAD}Max locked memory         unlimited            unlimited            bytes\n"
        );
        assert_eq!(check_limits(&unlimited), Ok(()));
    }
}
