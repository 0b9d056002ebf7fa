//! A reader that stops reading (`tracer report d.json | head -1`) ends the
//! output quietly: no panic, no error, exit status 0.

use std::{path::PathBuf, process::Command};

fn fixture() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dump-v1.json")
        .to_string_lossy()
        .into_owned()
}

/// Runs `tracer args` with a stdout whose reading end is already closed:
/// its first write fails with EPIPE, whatever the timing.
fn with_stdout_closed(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(args)
        .stdout(writer)
        .output()
        .unwrap()
}

#[test]
fn report_and_diff_end_quietly_when_the_reader_is_gone() {
    let dump = fixture();
    for args in [
        vec!["report", dump.as_str()],
        vec!["diff", dump.as_str(), dump.as_str()],
    ] {
        let out = with_stdout_closed(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "tracer {}: {} {stderr}",
            args.join(" "),
            out.status
        );
    }
}
