//! The dump reader and writer: versions, refusals, limits.

use std::os::unix::fs::OpenOptionsExt as _;

use super::*;
use crate::report::{TextOptions, render};

pub(super) const V0: &str = include_str!("../../tests/fixtures/record-v0.json");
const DUMP_V1: &str = include_str!("../../tests/fixtures/dump-v1.json");

/// The version 0 fixture as this tracer writes it, with a timeline of two
/// intervals, each holding every cgroup's waits, and a slow wait.
pub(super) fn v1() -> String {
    let mut rec = parse(V0.as_bytes()).unwrap();
    rec.intervals = crate::timeline::tests::timeline_of(&rec, 2);
    rec.slower_ns = 20_000_000;
    rec.stalls = vec![crate::stall::Stall {
        throttled_ns: 20_000_000,
        contended_ns: 10_000_000,
        other_ns: 0,
        throttled_by: Some("/svc".into()),
        occupants: vec![crate::stall::StallOccupant {
            cgroup: "/batch".into(),
            tgid: 9,
            comm: "hog".into(),
            ns: 10_000_000,
        }],
        ..crate::stall::tests::stall(100_000_000, 30_000_000)
    }];
    rec.gc_pauses = vec![pause()];
    to_json(&rec).unwrap()
}

/// A GC pause as `record --gc-log` keeps it.
fn pause() -> crate::windows::GcPause {
    crate::windows::GcPause {
        at_ns: 90_000_000,
        duration_ns: 40_000_000,
        kind: "GC(3) Pause Young (Normal) (G1 Evacuation Pause)".into(),
        gc_threads: 2,
        stalled_ns: 30_000_000,
        throttled_ns: 20_000_000,
        contended_ns: 10_000_000,
        other_ns: 0,
        throttled_by: Some("/svc".into()),
        top_occupant: Some(crate::windows::PauseOccupant {
            cgroup: "/batch".into(),
            comm: "hog".into(),
            ns: 10_000_000,
        }),
        cgroup: Some("/svc".into()),
    }
}

#[test]
fn gc_pauses_read_back_as_written_and_are_reported() {
    let rec = parse(v1().as_bytes()).unwrap();
    assert_eq!(rec.gc_pauses, [pause()]);
    let text = render(&rec, TextOptions::default());
    assert!(
        text.contains("GC pauses (recorded): 1 in the recording: of 40.0 ms of their time, GC threads waited 30.0 ms: 20.0 ms throttled by /svc's quota, 10.0 ms behind /batch"),
        "{text}"
    );
    // Parts that do not add up, or a stall longer than the pause: refused.
    for (throttled, stalled) in [(25_000_000, 30_000_000), (30_000_000, 50_000_000)] {
        let mut bad = rec.clone();
        bad.gc_pauses[0].throttled_ns = throttled;
        bad.gc_pauses[0].stalled_ns = stalled;
        let e = parse(to_json(&bad).unwrap().as_bytes()).unwrap_err();
        assert!(format!("{e:#}").contains("gc_pauses[0]"), "{e:#}");
    }
}

#[test]
fn a_timeline_reads_back_as_written() {
    let rec = parse(v1().as_bytes()).unwrap();
    assert_eq!(rec.intervals.len(), 2);
    assert_eq!(rec.intervals, crate::timeline::tests::timeline_of(&rec, 2));
    let text = render(&rec, TextOptions::default());
    assert!(
        text.contains("When: the 5 worst moments of 2 intervals"),
        "{text}"
    );
}

#[test]
fn slow_waits_read_back_as_written_and_are_reported() {
    let mut rec = parse(V0.as_bytes()).unwrap();
    rec.slower_ns = 20_000_000;
    let mut slow = crate::stall::tests::stall(1_500_000_000, 80_000_000);
    slow.throttled_ns = 79_000_000;
    slow.other_ns = 1_000_000;
    slow.throttled_by = Some("/svc".into());
    rec.stalls = vec![crate::stall::tests::stall(500_000_000, 25_000_000), slow];
    rec.events.set(tracer_common::maps::Counter::SlowLimited, 3);
    let back = parse(to_json(&rec).unwrap().as_bytes()).unwrap();
    assert_eq!(back.stalls, rec.stalls);
    assert_eq!(back.slower_ns, 20_000_000);
    let text = render(&back, TextOptions::default());
    assert!(
        text.contains("Slow waits (at least 20.0 ms): 2 recorded, 2 kept; 105 ms waiting, of which 79.0 ms throttled"),
        "{text}"
    );
    assert!(text.contains("3 more were over the rate limit"), "{text}");
    // The longest first.
    let listed = &text[text.find("The 2 longest").unwrap()..];
    assert!(
        listed.find("80.0 ms").unwrap() < listed.find("25.0 ms").unwrap(),
        "{listed}"
    );
    assert!(listed.contains("throttled by /svc"), "{listed}");
    // A crafted one whose parts do not add up is refused, naming it.
    let mut bad = rec.clone();
    bad.stalls[1].throttled_ns = u64::MAX;
    let e = parse(to_json(&bad).unwrap().as_bytes()).unwrap_err();
    assert!(format!("{e:#}").contains("stalls[1]"), "{e:#}");
}

#[test]
fn older_record_json_reads_as_version_0() {
    let rec = parse(V0.as_bytes()).unwrap();
    assert_eq!(rec.format, FORMAT);
    assert_eq!(rec.format_version, VERSION);
    assert_eq!(rec.host, "unknown");
    let svc = rec.cgroups.iter().find(|c| c.path == "/svc").unwrap();
    assert!(svc.wait.causes.throttled_ns > 0);
    assert!(svc.wait.runnable_wait.hdr.starts_with("HISTF"));
    assert!(!svc.wait.runnable_wait.buckets.is_empty());
}

#[test]
fn write_read_round_trip_renders_the_same() {
    let first = parse(V0.as_bytes()).unwrap();
    let again = parse(to_json(&first).unwrap().as_bytes()).unwrap();
    assert_eq!(again, first);
    assert_eq!(
        render(&again, TextOptions::default()),
        render(&first, TextOptions::default())
    );
}

#[test]
fn not_a_dump() {
    let cases: [(&[u8], &str); 6] = [
        (b"", "does not start with a JSON object"),
        (b"\x89PNG\r\n\x1a\n", "not text"),
        (b"[1, 2, 3]", "does not start with a JSON object"),
        (
            br#"{"format": "something-else", "format_version": 1}"#,
            "its format is",
        ),
        (br#"{"hello": "world"}"#, "no \"format\""),
        (br#"{"format": "tracer-dump"}"#, "no format_version"),
    ];
    for (bytes, want) in cases {
        let err = format!("{:#}", parse(bytes).unwrap_err());
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }
}

#[test]
fn newer_versions_are_refused_with_advice() {
    let newer = v1().replacen(
        &format!("\"format_version\":{VERSION}"),
        &format!("\"format_version\":{}", VERSION + 1),
        1,
    );
    let err = format!("{:#}", parse(newer.as_bytes()).unwrap_err());
    assert!(
        err.contains("newer tracer") && err.contains(&format!("version {}", VERSION + 1)),
        "{err}"
    );
}

#[test]
fn truncation_and_corruption_are_named() {
    let good = v1();
    let err = format!(
        "{:#}",
        parse(&good.as_bytes()[..good.len() / 2]).unwrap_err()
    );
    assert!(err.contains("truncated"), "{err}");
    // A count that disagrees with the histogram.
    let tampered = good.replacen("\"count\":", "\"count\":1", 1);
    let err = format!("{:#}", parse(tampered.as_bytes()).unwrap_err());
    assert!(err.contains("corrupted"), "{err}");
    // A damaged HdrHistogram.
    let tampered = good.replacen("\"hdr\":\"HISTF", "\"hdr\":\"HISTX", 1);
    let err = format!("{:#}", parse(tampered.as_bytes()).unwrap_err());
    assert!(err.contains("corrupted") && err.contains(".hdr"), "{err}");
}

/// A host with 200 busy cgroups: long Kubernetes paths, wide histograms,
/// blame lists as long as the tracer keeps them (8 cgroups, 3 processes
/// each). The dump stays under 1 MiB.
#[test]
fn two_hundred_cgroups_fit_in_a_mebibyte() {
    use tracer_common::hist::LatencyHist;

    use crate::recording::{Blame, BlamedProcess, WaitHistogram};

    let mut rec = parse(V0.as_bytes()).unwrap();
    let template = rec.cgroups[0].clone();
    let mut wide = LatencyHist::ZERO;
    for i in 0..5_000u64 {
        // 1 µs to about 2 s, spread over every bucket in between.
        wide.record(1_000 + (i * i * i) % 2_000_000_000);
    }
    let hist = WaitHistogram::from_hist(&wide);
    assert!(hist.buckets.len() > 200, "{} buckets", hist.buckets.len());
    let blame: Vec<Blame> = (0..8)
        .map(|i| Blame {
            path: format!("/kubepods/burstable/pod{i:032x}/{:064x}", i * 7919),
            id: 1_000 + i,
            ns: 1_000_000 * (i + 1),
            workload: None,
            ran_ns: 0,
            weight: None,
            processes: (0..3)
                .map(|p| BlamedProcess {
                    tgid: 100_000 + p,
                    comm: "java-worker-pool".into(),
                    ns: 100_000 * u64::from(p + 1),
                })
                .collect(),
        })
        .collect();
    rec.cgroups = (0..200u64)
        .map(|i| {
            let mut c = template.clone();
            c.path = format!("/kubepods/burstable/pod{i:032x}/{:064x}", i * 104_729);
            c.id = 10_000 + i;
            c.wait.runnable_wait = hist.clone();
            c.on_cpu = hist.clone();
            c.wait.blame = blame.clone();
            c
        })
        .collect();
    let json = to_json(&rec).unwrap();
    eprintln!("a dump of 200 cgroups: {} bytes", json.len());
    assert!(json.len() < 1 << 20, "{} bytes", json.len());
    assert_eq!(parse(json.as_bytes()).unwrap().cgroups.len(), 200);
}

/// A 50-byte HdrHistogram whose header asks for five significant digits
/// over the tracer's range (53 MB to decode) is refused, and the error
/// says where it is.
#[test]
fn a_crafted_histogram_header_is_refused_naming_where() {
    let crafted = crate::hdr::tests::crafted(5, 1, u64::MAX / 2, &[]);
    let dump = DUMP_V1.replacen(
        "\"hdr\":\"",
        &format!("\"hdr\":\"{crafted}\",\"was\":\""),
        1,
    );
    let err = format!("{:#}", parse(dump.as_bytes()).unwrap_err());
    assert!(
        err.contains("cgroups[0] (/svc).runnable_wait") && err.contains("5 significant"),
        "{err}"
    );
}

/// A file far larger than any dump the tracer writes is refused by its
/// size, before anything is read (the file here is sparse: nothing to read).
#[test]
fn oversized_files_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.json");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let err = format!("{:#}", read(&path).unwrap_err());
    assert!(err.contains("too large"), "{err}");
}

/// A FIFO or a device is refused without being opened for reading: reading
/// a FIFO would wait for a writer, /dev/zero would never end.
#[test]
fn non_regular_files_are_refused_unread() {
    use std::{ffi::CString, os::unix::ffi::OsStrExt as _};

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.json");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A writer that offers a valid dump, should the reader open the FIFO.
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) {
                let _ = std::io::Write::write_all(&mut f, DUMP_V1.as_bytes());
            }
        })
    };
    let result = read(&fifo);
    // Lets the writer's open return if the reader did not open the FIFO: held
    // open until the writer is done, whenever it got to its open.
    let release = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    writer.join().unwrap();
    drop(release);
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains("not a regular file"), "{err}");
    let err = format!("{:#}", read(Path::new("/dev/zero")).unwrap_err());
    assert!(err.contains("not a regular file"), "{err}");
    let err = format!("{:#}", read(dir.path()).unwrap_err());
    assert!(err.contains("not a regular file"), "{err}");
}

/// Found by the fuzz: a version 0 dump whose maximum lies below its largest
/// bucket made building its HdrHistogram subtract past zero.
#[test]
fn a_version_0_maximum_below_its_buckets_is_refused() {
    let mut doc: serde_json::Value = serde_json::from_str(V0).unwrap();
    doc["cgroups"][0]["runnable_wait"]["max_ns"] = 0.into();
    let err = format!("{:#}", parse(doc.to_string().as_bytes()).unwrap_err());
    assert!(
        err.contains("cgroups[0]") && err.contains("below its largest bucket"),
        "{err}"
    );
}

/// Found by the fuzz: a quota of 2^63 µs made the report multiply past
/// 2^64 to show it in nanoseconds.
#[test]
fn an_absurd_quota_renders() {
    let mut doc: serde_json::Value = serde_json::from_str(DUMP_V1).unwrap();
    doc["cgroups"][0]["quota"]["quota_us"] = (u64::MAX / 2).into();
    doc["cgroups"][0]["quota"]["period_us"] = u64::MAX.into();
    let rec = parse(doc.to_string().as_bytes()).unwrap();
    let text = render(&rec, TextOptions::default());
    assert!(
        text.contains("quota: 18446744074 s per 18446744074 s"),
        "{text}"
    );
}

/// The names in a directory, sorted.
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A dump is created readable by its owner only (it names processes,
/// cgroups and the host), and nothing else is left in its directory.
#[test]
fn dumps_are_private_and_leave_nothing_behind() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.json");
    let rec = parse(DUMP_V1.as_bytes()).unwrap();
    write(&path, &rec).unwrap();
    // Over an existing, more open file too.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    write(&path, &rec).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    assert_eq!(listing(dir.path()), ["d.json"]);
    assert_eq!(read(&path).unwrap(), rec);
}

/// A write that fails, while writing or when renaming, leaves no temporary
/// file and whatever was under the final name untouched.
#[test]
fn a_failed_write_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let rec = parse(DUMP_V1.as_bytes()).unwrap();
    // The final name is a directory: the rename fails.
    let taken = dir.path().join("taken.json");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("inside"), "x").unwrap();
    assert!(write(&taken, &rec).is_err());
    assert_eq!(listing(dir.path()), ["taken.json"]);
    // Writing the content fails half-way.
    let path = dir.path().join("d.json");
    std::fs::write(&path, "before").unwrap();
    let err = file::write_with(&path, |f| {
        std::io::Write::write_all(f, b"{\"half")?;
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("disk full"), "{err:#}");
    assert_eq!(listing(dir.path()), ["d.json", "taken.json"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "before");
}

/// Root writes dumps: a symbolic link planted where it writes (the final
/// name, or a temporary name another tracer would have used) is not
/// followed, so it cannot make root overwrite another file.
#[test]
fn symbolic_links_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let rec = parse(DUMP_V1.as_bytes()).unwrap();
    // The temporary name the tracer used to write through.
    std::os::unix::fs::symlink(&victim, dir.path().join("d.json.tmp")).unwrap();
    write(&dir.path().join("d.json"), &rec).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // The final name.
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let err = format!("{:#}", write(&link, &rec).unwrap_err());
    assert!(err.contains("symbolic link"), "{err}");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let err = format!("{:#}", check_writable(&link).unwrap_err());
    assert!(err.contains("symbolic link"), "{err}");
}

#[test]
fn figures_that_add_up_past_u64_render_without_a_panic() {
    let mut rec = parse(v1().as_bytes()).unwrap();
    let huge = u64::MAX / 2 + 1;
    rec.stalls = vec![crate::stall::tests::stall(0, huge); 2];
    rec.gc_pauses = vec![
        crate::windows::GcPause {
            duration_ns: huge,
            stalled_ns: huge,
            throttled_ns: huge,
            ..pause()
        };
        2
    ];
    rec.gc_pauses.iter_mut().for_each(|p| {
        p.at_ns = 0;
        p.contended_ns = 0;
        p.other_ns = 0;
    });
    let back = parse(to_json(&rec).unwrap().as_bytes()).unwrap();
    let text = render(&back, TextOptions::default());
    assert!(
        text.contains("Slow waits") && text.contains("GC pauses (recorded)"),
        "{text}"
    );
    let _ = crate::diff::render(&back, &back, 5);
    let _ = crate::html::render(&back, 5);
}
