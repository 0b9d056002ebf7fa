//! Each CPU's run-queue clock put on the programs' clock.
//!
//! The programs time everything with `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`).
//! A wakeup needs the time too, to date the wait it begins, but the helper is
//! dear where calls go through retpolines and return thunks: on an AMD EPYC VM
//! with both, it took 62 of the 160 ns that `sched_wakeup` added to an empty
//! program. The scheduler has just stamped the woken task's run queue
//! (`rq->clock`, updated by every wakeup path before the tracepoint) and that
//! clock is a plain load. It runs on `sched_clock`, though, which is offset from
//! `CLOCK_MONOTONIC` and drifts from it by NTP's corrections (parts per million).
//!
//! So `sched_switch`, which reads `bpf_ktime_get_ns()` anyway, also reads its
//! run queue's clock, and keeps their difference: the offset. A wakeup adds the
//! offset of its run queue's CPU to that run queue's clock.
//!
//! `sched_switch` cannot take one sample as the offset: the scheduler may
//! have skipped its clock update (after a wakeup that asked for a preemption,
//! the clock keeps the wakeup's time), and it reads the clock some time before
//! the tracepoint. Both make a sample larger than the true offset, never
//! smaller. The estimate is therefore the least sample, allowed to rise by
//! [`DRIFT_SHIFT`] (about 1,000 parts per million of the time since the last
//! sample) so that it follows a clock that drifts. A wakeup's time is then
//! late by at most the smallest gap seen between the clock's update and the
//! tracepoint: a few hundred ns, about what the wakeup tracepoint itself is
//! late by after the enqueue, and never early, so a wait never begins before
//! the switch that preceded it on its CPU.

/// The estimate may rise by `elapsed >> DRIFT_SHIFT` between samples: 977
/// parts per million, above NTP's largest frequency correction (500).
pub const DRIFT_SHIFT: u32 = 10;

/// `CLOCK_MONOTONIC` less one CPU's `rq->clock`, estimated (see the module).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockOffset {
    /// The offset, two's complement (`sched_clock` may run ahead).
    pub offset: u64,
    /// `CLOCK_MONOTONIC` of the last sample; 0 before the first.
    pub sampled_at: u64,
}

impl ClockOffset {
    pub const UNSET: Self = Self {
        offset: 0,
        sampled_at: 0,
    };

    /// Takes a sample: `now` on `CLOCK_MONOTONIC` with the run queue's clock
    /// reading `rq_clock`.
    #[inline(always)]
    pub fn sample(&mut self, now: u64, rq_clock: u64) {
        let sample = now.wrapping_sub(rq_clock);
        let known = self.sampled_at != 0 && now >= self.sampled_at;
        let allowed = self
            .offset
            .wrapping_add(now.wrapping_sub(self.sampled_at) >> DRIFT_SHIFT);
        // Signed: the least of two offsets either side of zero.
        self.offset = if known && (allowed.wrapping_sub(sample) as i64) < 0 {
            allowed
        } else {
            sample
        };
        self.sampled_at = now;
    }

    /// `rq_clock` on `CLOCK_MONOTONIC`; `None` before the first sample.
    #[inline(always)]
    pub fn monotonic(&self, rq_clock: u64) -> Option<u64> {
        (self.sampled_at != 0).then(|| rq_clock.wrapping_add(self.offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An estimate after `samples` of (`CLOCK_MONOTONIC`, `rq->clock`).
    fn sampled(samples: &[(u64, u64)]) -> ClockOffset {
        let mut c = ClockOffset::UNSET;
        for &(now, rq) in samples {
            c.sample(now, rq);
        }
        c
    }

    #[test]
    fn nothing_is_known_before_the_first_sample() {
        assert_eq!(ClockOffset::UNSET.monotonic(5), None);
    }

    #[test]
    fn a_late_or_stale_clock_does_not_move_a_good_estimate() {
        let off = 1_000_000;
        // A fresh sample (clock updated 200 ns before the tracepoint), then one
        // whose update was skipped: the clock still holds a wakeup 40 us back.
        let c = sampled(&[
            (10_000_000, 10_000_000 - off - 200),
            (10_050_000, 10_010_000 - off),
        ]);
        // 200 ns late, and risen by what 50 us of drift allows.
        let late = 200 + (50_000 >> DRIFT_SHIFT);
        assert_eq!(c.monotonic(20_000_000 - off), Some(20_000_000 + late));
    }

    #[test]
    fn a_smaller_sample_replaces_the_estimate_at_once() {
        let off = 1_000_000;
        let c = sampled(&[
            (10_000_000, 10_000_000 - off - 5_000),
            (10_001_000, 10_001_000 - off - 100),
        ]);
        assert_eq!(c.monotonic(30_000_000 - off), Some(30_000_000 + 100));
    }

    #[test]
    fn the_estimate_follows_a_clock_drifting_within_the_allowance() {
        // sched_clock loses 500 ppm against CLOCK_MONOTONIC: the true offset
        // grows 500 ns a ms. Each sample is 300 ns late.
        let mut c = ClockOffset::UNSET;
        let mut worst = 0u64;
        for ms in 1..=2_000u64 {
            let now = 10_000_000 + ms * 1_000_000;
            let offset = 7_000_000 + ms * 500;
            let rq = now - offset - 300;
            c.sample(now, rq);
            let err = c.monotonic(now - offset).unwrap() - now;
            worst = worst.max(err);
        }
        // 300 ns late, plus at most the rise allowed in one interval.
        assert!(worst <= 300 + (1_000_000 >> DRIFT_SHIFT), "{worst}");
    }

    #[test]
    fn a_run_queue_clock_ahead_of_monotonic_is_a_negative_offset() {
        // sched_clock 3 ms ahead; samples 400 and 250 ns late.
        let c = sampled(&[(1_000_000, 4_000_000 - 400), (2_000_000, 5_000_000 - 250)]);
        assert_eq!(c.monotonic(9_000_000), Some(6_000_000 + 250));
    }
}
