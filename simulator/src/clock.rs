//! Each node's clocks, drawn from the seed.
//!
//! Virtual time `t` is the true time. A node reads two clocks: a monotonic one, `t`
//! scaled by the node's drift (it never steps), and a wall clock, the monotonic reading
//! plus a constant offset plus the steps (forwards or backwards) that happened by `t`, as
//! a time daemon's corrections would. Every node drifts a little and is off by a little;
//! a node with a *wrong clock* is off by up to a day, or steps back by up to a day, and
//! counts against the subnet's fault budget `f` together with the Byzantine nodes (the
//! protocol tolerates a bounded skew; beyond it a node can no longer judge block times).

use super::*;

/// The most any node's clock drifts, in parts per million.
pub(crate) const MAX_DRIFT_PPM: i64 = 100;
/// The most a node with a good clock is off (its offset and its small steps together).
pub(crate) const SMALL_OFFSET_NS: i64 = 100 * MS as i64;
/// How far off a wrong clock can be.
pub(crate) const DAY_NS: u64 = 24 * 3600 * SEC;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Clock {
    offset_ns: i64,
    drift_ppm: i64,
    /// `(virtual time, change)`: the wall clock jumps by `change` at that time.
    steps: Vec<(u64, i64)>,
    /// Off by more than the protocol tolerates, at some point of the run.
    pub(crate) wrong: bool,
}

impl Clock {
    /// A good clock: a little drift, a little offset, maybe one small step back.
    pub(crate) fn good(rng: &mut ChaCha20Rng, fault_phase_end: u64) -> Self {
        let drift_ppm = rng.random_range(-MAX_DRIFT_PPM..=MAX_DRIFT_PPM);
        let offset_ns = rng.random_range(-SMALL_OFFSET_NS / 2..=SMALL_OFFSET_NS / 2);
        let mut steps = Vec::new();
        if fault_phase_end > 0 && rng.random_bool(0.3) {
            let at = rng.random_range(0..fault_phase_end);
            steps.push((at, -rng.random_range(0..=SMALL_OFFSET_NS / 2)));
        }
        Self {
            offset_ns,
            drift_ppm,
            steps,
            wrong: false,
        }
    }

    /// A wrong clock: up to a day ahead or behind from the start, or a step back of up
    /// to a day during the fault phase.
    pub(crate) fn wrong(rng: &mut ChaCha20Rng, fault_phase_end: u64) -> Self {
        let mut c = Self::good(rng, fault_phase_end);
        let far = rng.random_range(10 * SEC..=DAY_NS) as i64;
        if fault_phase_end > 0 && rng.random_bool(0.5) {
            let at = rng.random_range(0..fault_phase_end);
            c.steps.push((at, -far));
        } else if rng.random_bool(0.5) {
            c.offset_ns += far;
        } else {
            c.offset_ns -= far;
        }
        c.wrong = true;
        c
    }

    /// The monotonic clock at true time `t`.
    pub(crate) fn mono(&self, t: u64) -> u64 {
        let t = i128::from(t);
        (t + t * i128::from(self.drift_ppm) / 1_000_000).clamp(0, i128::from(u64::MAX)) as u64
    }

    /// The wall clock at true time `t`.
    pub(crate) fn wall(&self, t: u64) -> u64 {
        let stepped: i64 = self
            .steps
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, d)| *d)
            .sum();
        (i128::from(self.mono(t)) + i128::from(self.offset_ns) + i128::from(stepped))
            .clamp(0, i128::from(u64::MAX)) as u64
    }

    /// The earliest true time at which the monotonic clock reads at least `deadline`.
    pub(crate) fn mono_reaches(&self, deadline: u64) -> u64 {
        let d = i128::from(deadline);
        let mut t = (d * 1_000_000 / (1_000_000 + i128::from(self.drift_ppm))).max(0) as u64;
        // Integer division may land a step early or late: walk to the exact point.
        while t > 0 && self.mono(t - 1) >= deadline {
            t -= 1;
        }
        while self.mono(t) < deadline {
            t += 1;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_read_as_drawn() {
        let c = Clock {
            offset_ns: 5 * MS as i64,
            drift_ppm: 100,
            steps: vec![(10 * SEC, -(2 * SEC as i64))],
            wrong: false,
        };
        assert_eq!(c.mono(SEC), SEC + 100_000);
        assert_eq!(c.wall(SEC), SEC + 100_000 + 5 * MS);
        // After the step back the wall clock reads less, the monotonic one does not.
        assert!(c.wall(10 * SEC) < c.wall(10 * SEC - 1));
        assert!(c.mono(10 * SEC) > c.mono(10 * SEC - 1));
        for d in [0, 1, 999_999, SEC, 77 * SEC + 3] {
            let t = c.mono_reaches(d);
            assert!(c.mono(t) >= d && (t == 0 || c.mono(t - 1) < d), "{d}");
        }
        let slow = Clock {
            drift_ppm: -100,
            ..Clock::default()
        };
        let t = slow.mono_reaches(SEC);
        assert!(slow.mono(t) >= SEC && slow.mono(t - 1) < SEC && t > SEC);
    }
}
