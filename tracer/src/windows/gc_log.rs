//! HotSpot's unified GC log (`-Xlog:gc`, `-Xlog:gc*`, JDK 9 and later): its
//! stop-the-world pauses, each with when it ended and how long it lasted.
//!
//! A line is decorators in brackets, then the message. HotSpot writes the
//! decorators asked for in a fixed order whatever order they were asked in:
//! `time`, `utctime`, `uptime`, `timemillis`, `uptimemillis`, `timenanos`,
//! `uptimenanos`, `hostname`, `pid`, `tid`, `level`, `tags`. A pause is logged
//! as it ends, with its length last:
//!
//! ```text
//! [0.107s][16760701278697ns][info][gc] GC(0) Pause Young (Normal) (G1 Evacuation Pause) 6M->6M(64M) 4.237ms
//! [0.256s][16773958748664ns][info][gc,phases   ] GC(0) Y: Pause Mark Start (Major) 0.022ms
//! ```
//!
//! G1, Parallel and Serial log their pauses under `gc`; Shenandoah too (`Pause
//! Init Mark`, `Pause Final Mark`, ...); ZGC under `gc,phases` (`-Xlog:gc*`),
//! and generational ZGC (JDK 21+) with the generation first (`Y:`, `O:`; `y:`
//! in a minor collection).
//! Lines that start a pause (`gc,start`, no length) and every other line are
//! not pauses. A line that names a pause of a collection (`GC(n) ... Pause`)
//! but does not read as one is counted as skipped, never fatal.

use super::Stamp;

/// One stop-the-world pause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    /// The collection's number (`GC(n)`).
    pub gc: u64,
    /// What the log calls it: `Pause Young (Normal) (G1 Evacuation Pause)`,
    /// `Y: Pause Mark Start (Major)`, `Pause Full (Ergonomics)`.
    pub kind: String,
    /// When it ended, by the most exact clock the line has.
    pub end: Stamp,
    pub duration_ns: u64,
}

/// A log read: its pauses in order, and what was not read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcLog {
    pub pauses: Vec<Pause>,
    /// Lines that name a pause of a collection but do not read as one.
    pub skipped: u64,
    /// The JVM's pid, if the `pid` decorator is on.
    pub pid: Option<u32>,
}

/// Reads a GC log's text.
pub fn parse(text: &str) -> GcLog {
    let mut log = GcLog::default();
    for line in text.lines() {
        let (decorators, message) = split_decorators(line);
        let message = message.trim();
        let Some((gc, rest)) = collection(message) else {
            continue;
        };
        let Some(at) = rest.find("Pause ") else {
            continue;
        };
        let stamps = Stamps::of(&decorators);
        if log.pid.is_none() {
            log.pid = stamps.pid;
        }
        match pause(gc, rest, at, &stamps) {
            Some(p) => log.pauses.push(p),
            // A pause's start (`gc,start`) has no length and is not one.
            None if !ends_in_ms(rest) => {}
            None => log.skipped += 1,
        }
    }
    log
}

/// `GC(n)` at the start of a message, and what follows it.
fn collection(message: &str) -> Option<(u64, &str)> {
    let rest = message.strip_prefix("GC(")?;
    let (n, rest) = rest.split_once(')')?;
    Some((n.parse().ok()?, rest.trim_start()))
}

fn ends_in_ms(text: &str) -> bool {
    text.trim_end().ends_with("ms")
}

/// The pause in `rest` (a message after `GC(n)`), whose `Pause ` is at `at`.
fn pause(gc: u64, rest: &str, at: usize, stamps: &Stamps) -> Option<Pause> {
    let text = rest.trim_end();
    let (body, last) = text.rsplit_once(' ')?;
    let ms: f64 = last.strip_suffix("ms")?.parse().ok()?;
    if !ms.is_finite() || !(0.0..1e9).contains(&ms) {
        return None;
    }
    // The generation (`Y: `) before `Pause`, then the words up to the heap's
    // figures (`6M->6M(64M)`), which are not part of its name.
    let lead = rest[..at].trim();
    let words: Vec<&str> = body[at..]
        .split(' ')
        .take_while(|w| !w.contains("->"))
        .collect();
    let kind = if lead.is_empty() {
        words.join(" ")
    } else {
        format!("{lead} {}", words.join(" "))
    };
    Some(Pause {
        gc,
        kind,
        end: stamps.best()?,
        duration_ns: (ms * 1e6).round() as u64,
    })
}

/// A line's leading `[...]` groups, and the rest.
fn split_decorators(line: &str) -> (Vec<&str>, &str) {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(inner) = rest.strip_prefix('[') {
        let Some((d, after)) = inner.split_once(']') else {
            break;
        };
        out.push(d.trim());
        rest = after;
    }
    (out, rest)
}

/// What a line's decorators say of its time.
#[derive(Default)]
struct Stamps {
    /// `timenanos`: `System.nanoTime()`, `CLOCK_MONOTONIC`.
    monotonic: Option<u64>,
    /// `time`, `utctime` (ms), `timemillis`: since the Unix epoch, in ns.
    unix: Option<u64>,
    /// `uptime` (ms), `uptimemillis`, `uptimenanos`: since the JVM started.
    uptime: Option<u64>,
    pid: Option<u32>,
}

impl Stamps {
    fn of(decorators: &[&str]) -> Self {
        let mut s = Stamps::default();
        let mut nanos = Vec::new();
        let mut numbers = Vec::new();
        for &d in decorators {
            if let Some(ns) = d.strip_suffix("ns").and_then(|n| n.parse::<u64>().ok()) {
                nanos.push(ns);
            } else if let Some(ms) = d.strip_suffix("ms").and_then(|n| n.parse::<u64>().ok()) {
                // Milliseconds since the epoch are past 2001; a JVM's uptime
                // is not 31 years.
                if ms > 1_000_000_000_000 {
                    s.unix = s.unix.or(Some(ms.saturating_mul(1_000_000)));
                } else {
                    s.uptime = s.uptime.or(Some(ms.saturating_mul(1_000_000)));
                }
            } else if let Some(secs) = d.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
                // An uptime of 31 years or more is not one.
                if (0.0..1e9).contains(&secs) {
                    s.uptime = s.uptime.or(Some((secs * 1e9).round() as u64));
                }
            } else if let Some(ns) = iso8601_ns(d) {
                s.unix = s.unix.or(Some(ns));
            } else if let Ok(n) = d.parse::<u64>() {
                numbers.push(n);
            }
        }
        // `pid` comes before `tid`.
        s.pid = numbers.first().and_then(|&n| u32::try_from(n).ok());
        // `timenanos` comes before `uptimenanos`. Alone, a value that agrees
        // with `uptime` (to 10 ms) is the uptime; beside a wall-clock time it
        // could be either, and is left out; with no other clock it is taken
        // for `timenanos`, which the README recommends with `uptime`.
        match nanos[..] {
            [time, up, ..] => {
                s.monotonic = Some(time);
                s.uptime = Some(up);
            }
            [one] => match s.uptime {
                Some(up) if one.abs_diff(up) < 10_000_000 => s.uptime = Some(one),
                _ if s.unix.is_some() => {}
                _ => s.monotonic = Some(one),
            },
            [] => {}
        }
        s
    }

    /// The most exact: the monotonic clock, then the Unix time, then uptime.
    fn best(&self) -> Option<Stamp> {
        self.monotonic
            .map(Stamp::Monotonic)
            .or(self.unix.map(Stamp::Unix))
            .or(self.uptime.map(Stamp::Uptime))
    }
}

/// `2026-12-03T22:27:26.663+0000` (HotSpot's `time` and `utctime`) in ns
/// since the Unix epoch.
fn iso8601_ns(text: &str) -> Option<u64> {
    if text.len() < 23 || text.as_bytes()[19] != b'.' {
        return None;
    }
    let civil = super::civil_seconds(text)?;
    let millis: i64 = text.get(20..23)?.parse().ok()?;
    // The offset from UTC: `+0000`, `-0500`, or none.
    let offset_s = match text.get(23..) {
        None | Some("") | Some("Z") => 0,
        Some(zone) if zone.len() == 5 => {
            let sign = match &zone[..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (zone.get(1..3)?.parse::<i64>().ok()? * 3600
                + zone.get(3..5)?.parse::<i64>().ok()? * 60)
        }
        Some(_) => return None,
    };
    let secs = civil - offset_s;
    let ns = secs
        .checked_mul(1_000_000_000)?
        .checked_add(millis * 1_000_000)?;
    u64::try_from(ns).ok()
}

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::fixture;
    use super::*;

    #[test]
    fn each_clock_is_read_from_its_decorator() {
        // time, utctime, uptimenanos, pid, tid: the Unix time (ms), the pid.
        let log = fixture("jdk17-G1-gcstar-time.log");
        assert_eq!(log.pid, Some(29919));
        assert_eq!(log.pauses[0].end, Stamp::Unix(1_796_336_846_676_000_000));
        // The default decorators (uptime, level, tags): uptime only.
        let log = fixture("jdk17-G1-default.log");
        assert_eq!(log.pauses[0].end, Stamp::Uptime(196_000_000));
        // uptimenanos alone, beside uptime: the uptime, exactly.
        let log = parse(
            "[0.152s][152113628ns][info][gc] GC(0) Pause Young (Normal) (G1 Evacuation Pause) 6M->6M(64M) 12.670ms",
        );
        assert_eq!(log.pauses[0].end, Stamp::Uptime(152_113_628));
        // Both: the first is timenanos.
        let log = parse(
            "[0.152s][16760701278697ns][152113628ns][info][gc] GC(0) Pause Full (System.gc()) 6M->6M(64M) 12.670ms",
        );
        assert_eq!(log.pauses[0].end, Stamp::Monotonic(16_760_701_278_697));
        assert_eq!(log.pauses[0].kind, "Pause Full (System.gc())");
        // Milliseconds: since the epoch, or uptime.
        let log = parse("[1796336846676ms][info][gc] GC(1) Pause Remark 1.000ms");
        assert_eq!(log.pauses[0].end, Stamp::Unix(1_796_336_846_676_000_000));
        let log = parse("[152ms][info][gc] GC(1) Pause Cleanup 1.000ms");
        assert_eq!(log.pauses[0].end, Stamp::Uptime(152_000_000));
        // A zone other than UTC.
        assert_eq!(
            iso8601_ns("2026-12-03T17:27:26.676-0500"),
            Some(1_796_336_846_676_000_000)
        );
    }

    #[test]
    fn bad_lines_are_skipped_and_counted_never_fatal() {
        let text = "garbage\n\
            [0.1s][info][gc] GC(3) Pause Young (Normal) 6M->6M(64M) 12.x70ms\n\
            [0.1s][info][gc] GC(4) Pause Young (Normal) 6M->6M(64M) -1ms\n\
            [0.1s][info][gc,start] GC(5) Pause Young (Normal) (G1 Evacuation Pause)\n\
            [0.1s][info][gc] GC(6) Pause Young (Normal) 5.000ms\n\
            [0.1s[info][gc] GC(7) Pause Young 5.000ms\n\
            [\u{1b}]0;x\u{7}][info][gc] GC(8) Pause Young 5.000ms\n\
            [0.1s][info][gc] GC(99999999999999999999) Pause Young 5.000ms\n\
            [9999999999999999999999s][info][gc] GC(9) Pause Young 5.000ms";
        let log = parse(text);
        let read: Vec<u64> = log.pauses.iter().map(|p| p.gc).collect();
        assert_eq!(read, [6], "{log:?}");
        // GC(3), GC(4): bad lengths; GC(8), GC(9): no clock; a start is not
        // counted, nor a line whose decorators do not close.
        assert_eq!(log.skipped, 4, "{log:?}");
    }

    #[test]
    fn dates_count_days_as_the_calendar_does() {
        use super::super::days_from_civil;
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(iso8601_ns("1970-01-01T00:00:00.001+0000"), Some(1_000_000));
        assert_eq!(iso8601_ns("2026-13-03T17:27:26.676+0000"), None);
        assert_eq!(iso8601_ns("2026-12-03T17:27:26,676"), None);
    }

    proptest::proptest! {
        /// Whatever the text, it reads without a panic.
        #[test]
        fn any_text_reads(text in "(\\PC|\\[|\\]|[0-9]|ms|ns|s|GC\\(|\\)|Pause |,|-|:|T|Z|\\.|\n){0,200}") {
            let _ = parse(&text);
        }
    }
}
