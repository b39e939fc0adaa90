//! Fault injection: named points that fail at a configured rate, deterministically.
//!
//! This module owns the `--fault` spec (`reserve=2%,connect=1%,grant-delay=5%`), its
//! parser and errors, a tiny seeded PRNG (splitmix64, so runs replay exactly) and the
//! per-point counters of faults checked and injected. It decides *whether* a point
//! fails; the engine (or the simulation) decides what failing means at that point. It
//! never reads a clock or the OS's randomness, and it is never consulted at start-up.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A place where a fault can be injected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum FaultPoint {
    /// The taker's reservation (slot, buffers, parked task) fails before the ask.
    Reserve,
    /// Opening a new backend connection fails.
    Connect,
    /// A grant is delayed past the taker's deadline (exercises late grants, I5).
    GrantDelay,
    /// A send on the bounded channel mesh finds it full.
    ChannelFull,
    /// The request waiting for a grant goes away just before the grant arrives.
    Adopt,
    /// A request ends in error on its connection, which is closed instead of checked in.
    Checkin,
}

impl FaultPoint {
    /// All points, in spec order.
    pub const ALL: [FaultPoint; 6] = [
        FaultPoint::Reserve,
        FaultPoint::Connect,
        FaultPoint::GrantDelay,
        FaultPoint::ChannelFull,
        FaultPoint::Adopt,
        FaultPoint::Checkin,
    ];

    /// The name used in a spec.
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::Reserve => "reserve",
            FaultPoint::Connect => "connect",
            FaultPoint::GrantDelay => "grant-delay",
            FaultPoint::ChannelFull => "channel-full",
            FaultPoint::Adopt => "adopt",
            FaultPoint::Checkin => "checkin",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn known() -> String {
        FaultPoint::ALL.map(FaultPoint::name).join(", ")
    }
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultPoint {
    type Err = FaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultPoint::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| FaultError::UnknownPoint {
                name: s.to_string(),
                known: FaultPoint::known(),
            })
    }
}

/// A `--fault` spec that cannot be used, naming the bad item.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FaultError {
    /// The name before `=` is not a fault point.
    #[error("unknown fault point '{name}' (known: {known})")]
    UnknownPoint {
        /// What was given.
        name: String,
        /// The known names.
        known: String,
    },
    /// The rate is not a percentage between 0% and 100%.
    #[error("bad rate '{rate}' for fault point '{point}' (expected a percentage from 0% to 100%, e.g. 2% or 0.5%)")]
    BadRate {
        /// The point it was given for.
        point: String,
        /// What was given.
        rate: String,
    },
    /// An item is not `point=rate%`.
    #[error("bad fault item '{0}' (expected point=rate%, e.g. reserve=2%)")]
    BadItem(String),
    /// The same point appears twice.
    #[error("fault point '{0}' given twice")]
    Duplicate(String),
}

/// Rates are kept in parts per million so "0.5%" is exact.
const PPM: u64 = 1_000_000;

/// Which points fail and how often, with a seeded PRNG and counters. One per shard
/// ([`FaultPlan::for_shard`]) so shards never share state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    rates_ppm: [u32; FaultPoint::ALL.len()],
    state: u64,
    seed: u64,
    checked: [u64; FaultPoint::ALL.len()],
    injected: [u64; FaultPoint::ALL.len()],
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan::none()
    }
}

impl FaultPlan {
    /// A plan that never fails anything.
    pub fn none() -> Self {
        FaultPlan::with_seed(0)
    }

    fn with_seed(seed: u64) -> Self {
        FaultPlan {
            rates_ppm: [0; FaultPoint::ALL.len()],
            state: seed,
            seed,
            checked: [0; FaultPoint::ALL.len()],
            injected: [0; FaultPoint::ALL.len()],
        }
    }

    /// Parses a spec such as `reserve=2%,connect=1%,grant-delay=5%`. Empty means no faults.
    pub fn parse(spec: &str, seed: u64) -> Result<Self, FaultError> {
        let mut plan = FaultPlan::with_seed(seed);
        let mut seen = [false; FaultPoint::ALL.len()];
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, rate) = item
                .split_once('=')
                .ok_or_else(|| FaultError::BadItem(item.to_string()))?;
            let point: FaultPoint = name.trim().parse()?;
            let ppm = parse_rate(rate.trim()).ok_or_else(|| FaultError::BadRate {
                point: point.name().to_string(),
                rate: rate.trim().to_string(),
            })?;
            if std::mem::replace(&mut seen[point.index()], true) {
                return Err(FaultError::Duplicate(point.name().to_string()));
            }
            plan.rates_ppm[point.index()] = ppm;
        }
        Ok(plan)
    }

    /// Sets one point's rate in parts per million (clamped to 1,000,000).
    pub fn set_rate_ppm(&mut self, point: FaultPoint, ppm: u32) {
        self.rates_ppm[point.index()] = ppm.min(PPM as u32);
    }

    /// A point's rate in parts per million.
    pub fn rate_ppm(&self, point: FaultPoint) -> u32 {
        self.rates_ppm[point.index()]
    }

    /// True when no point can fail.
    pub fn is_empty(&self) -> bool {
        self.rates_ppm.iter().all(|&r| r == 0)
    }

    /// The same rates with a PRNG stream of its own for `shard`, counters at zero.
    pub fn for_shard(&self, shard: usize) -> FaultPlan {
        let mut s = self.seed ^ (shard as u64).wrapping_mul(0xA076_1D64_78BD_642F);
        let seed = splitmix64(&mut s);
        FaultPlan {
            rates_ppm: self.rates_ppm,
            ..FaultPlan::with_seed(seed)
        }
    }

    /// Whether `point` fails this time. A point at 0% never draws from the PRNG, so
    /// adding or removing unused points does not change a replay.
    pub fn should_fail(&mut self, point: FaultPoint) -> bool {
        let rate = u64::from(self.rates_ppm[point.index()]);
        if rate == 0 {
            return false;
        }
        self.checked[point.index()] += 1;
        let fail = splitmix64(&mut self.state) % PPM < rate;
        if fail {
            self.injected[point.index()] += 1;
        }
        fail
    }

    /// Faults injected at `point` so far.
    pub fn injected(&self, point: FaultPoint) -> u64 {
        self.injected[point.index()]
    }

    /// Times `point` was consulted with a non-zero rate.
    pub fn checked(&self, point: FaultPoint) -> u64 {
        self.checked[point.index()]
    }
}

impl FromStr for FaultPlan {
    type Err = FaultError;

    /// Parses with seed 0; use [`FaultPlan::parse`] to choose the seed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultPlan::parse(s, 0)
    }
}

impl fmt::Display for FaultPlan {
    /// The spec, with the points that have a non-zero rate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for p in FaultPoint::ALL {
            let ppm = self.rates_ppm[p.index()];
            if ppm == 0 {
                continue;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            let whole = ppm / 10_000;
            let frac = ppm % 10_000;
            if frac == 0 {
                write!(f, "{}={whole}%", p.name())?;
            } else {
                let digits = format!("{frac:04}");
                write!(f, "{}={whole}.{}%", p.name(), digits.trim_end_matches('0'))?;
            }
        }
        Ok(())
    }
}

/// "2%", "0.5%", "100%" -> parts per million; at most four decimals.
fn parse_rate(s: &str) -> Option<u32> {
    let num = s.strip_suffix('%')?.trim();
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || frac.len() > 4 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let frac_ppm: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<4}").parse().ok()?
    };
    let ppm = int.checked_mul(10_000)?.checked_add(frac_ppm)?;
    (ppm <= PPM).then_some(ppm as u32)
}

/// splitmix64: small, fast, and good enough to decide faults; fully determined by `state`.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spec_and_round_trips() {
        let p = FaultPlan::parse(
            "reserve=2%, connect=1%,grant-delay=5%,channel-full=10%,adopt=0.25%",
            7,
        )
        .unwrap();
        assert_eq!(p.rate_ppm(FaultPoint::Reserve), 20_000);
        assert_eq!(p.rate_ppm(FaultPoint::Adopt), 2_500);
        assert_eq!(p.rate_ppm(FaultPoint::Checkin), 0);
        assert_eq!(
            p.to_string(),
            "reserve=2%,connect=1%,grant-delay=5%,channel-full=10%,adopt=0.25%"
        );
        assert!(FaultPlan::parse("", 1).unwrap().is_empty());
        assert!("checkin=100%".parse::<FaultPlan>().is_ok());
    }

    #[test]
    fn errors_name_the_bad_item() {
        let e = FaultPlan::parse("reserve=2%,x=1%", 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown fault point 'x' (known: reserve, connect, grant-delay, channel-full, adopt, checkin)"
        );
        for bad in ["150%", "2", "-1%", "1.23456%", "%", "abc%", "1.x%"] {
            let e = FaultPlan::parse(&format!("connect={bad}"), 0).unwrap_err();
            assert_eq!(
                e,
                FaultError::BadRate {
                    point: "connect".into(),
                    rate: bad.into()
                },
                "{bad}"
            );
        }
        assert!(FaultPlan::parse("connect=150%", 0)
            .unwrap_err()
            .to_string()
            .starts_with("bad rate '150%' for fault point 'connect'"));
        assert_eq!(
            FaultPlan::parse("reserve", 0).unwrap_err(),
            FaultError::BadItem("reserve".into())
        );
        assert_eq!(
            FaultPlan::parse("adopt=1%,adopt=2%", 0).unwrap_err(),
            FaultError::Duplicate("adopt".into())
        );
    }

    #[test]
    fn rates_are_honoured_and_counted() {
        let mut p = FaultPlan::parse("reserve=10%,connect=100%", 42).unwrap();
        let n = 100_000;
        let fails = (0..n)
            .filter(|_| p.should_fail(FaultPoint::Reserve))
            .count();
        assert!((9_000..11_000).contains(&fails), "{fails}");
        assert_eq!(p.injected(FaultPoint::Reserve), fails as u64);
        assert_eq!(p.checked(FaultPoint::Reserve), n);
        assert!(p.should_fail(FaultPoint::Connect));
        assert!(!p.should_fail(FaultPoint::Adopt));
        assert_eq!(p.checked(FaultPoint::Adopt), 0);
    }

    #[test]
    fn same_seed_same_decisions_and_shards_differ() {
        let base = FaultPlan::parse("channel-full=50%", 9).unwrap();
        let draw = |mut p: FaultPlan| -> Vec<bool> {
            (0..64)
                .map(|_| p.should_fail(FaultPoint::ChannelFull))
                .collect()
        };
        assert_eq!(draw(base.clone()), draw(base.clone()));
        assert_eq!(draw(base.for_shard(3)), draw(base.for_shard(3)));
        assert_ne!(draw(base.for_shard(0)), draw(base.for_shard(1)));
    }
}
