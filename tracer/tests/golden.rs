//! Golden tests: the terminal report, the HTML page and the diff of committed
//! dumps, byte for byte. After an intended change of the output, regenerate
//! the files with `UPDATE_GOLDEN=1 cargo test -p tracer --test golden` and
//! review the diff.

use std::path::PathBuf;

use tracer::{
    diff, dump, html,
    recording::Recording,
    report::{self, TextOptions},
};

fn fixture(name: &str) -> Recording {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    dump::read(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from {} at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             (UPDATE_GOLDEN=1 rewrites it after an intended change)",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

#[test]
fn text_report() {
    check(
        "report.txt",
        &report::render(&fixture("dump-v1.json"), TextOptions::default()),
    );
}

#[test]
fn text_report_of_a_version_0_dump() {
    check(
        "report-v0.txt",
        &report::render(&fixture("record-v0.json"), TextOptions::default()),
    );
}

/// Two pods of two container runtimes' layouts, named from a kubelet log
/// directory (`record --pods-log-dir`), one waiting behind the other.
#[test]
fn text_report_of_pods() {
    check(
        "report-pods.txt",
        &report::render(&fixture("dump-pods.json"), TextOptions::default()),
    );
}

#[test]
fn html_report() {
    check("report.html", &html::render(&fixture("dump-v1.json"), 20));
}

#[test]
fn diff_report() {
    check(
        "diff.txt",
        &diff::render(&fixture("record-v0.json"), &fixture("dump-v1.json"), 10),
    );
}
