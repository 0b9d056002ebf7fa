//! Reading what a guest wrote on its results port: `/init`'s markers (see
//! `initramfs::init_script`) around the libtest output of each invocation of the
//! test binary (`test NAME ... ok|FAILED|ignored, REASON`, then the failure
//! messages), into per-test outcomes that say honestly what did not report.

use std::collections::BTreeMap;

use super::initramfs::MARK;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// With the test's failure message.
    Failed(String),
    /// With the reason.
    Ignored(String),
    /// Planned, but the guest never started it (it died or hung before).
    NotRun,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub name: String,
    pub outcome: Outcome,
}

/// Everything one guest reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GuestReport {
    /// `uname -r` in the guest.
    pub release: Option<String>,
    /// The file system type mounted on /sys/fs/cgroup (`cgroup2` for v2).
    pub cgroup_fs: Option<String>,
    pub tests: Vec<TestOutcome>,
    /// `/init` could not prepare the guest, and why.
    pub setup_failed: Option<String>,
    /// `/init`'s overall status, when it got to the end.
    pub done: Option<i32>,
    /// The arguments of each invocation the guest started, as it echoed them.
    pub started: Vec<String>,
}

impl GuestReport {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.tests.iter().filter(|t| f(&t.outcome)).count()
    }

    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    pub fn ignored(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Ignored(_)))
    }

    pub fn not_run(&self) -> usize {
        self.count(|o| matches!(o, Outcome::NotRun))
    }

    /// The tests that failed or did not run, by name.
    pub fn not_ok(&self) -> Vec<String> {
        self.tests
            .iter()
            .filter(|t| matches!(t.outcome, Outcome::Failed(_) | Outcome::NotRun))
            .map(|t| t.name.clone())
            .collect()
    }

    /// Adds a `NotRun` outcome for each planned invocation (arguments, named
    /// by `name`) that the guest never started.
    pub fn add_not_run(&mut self, planned: &[(String, String)]) {
        for (args, name) in planned {
            if !self.started.contains(args) {
                self.tests.push(TestOutcome {
                    name: name.clone(),
                    outcome: Outcome::NotRun,
                });
            }
        }
    }

    /// Tests the guest did not finish: never started, or cut off when it
    /// stopped.
    pub fn interrupted(&self) -> Vec<String> {
        self.tests
            .iter()
            .filter(|t| match &t.outcome {
                Outcome::NotRun => true,
                Outcome::Failed(msg) => msg.starts_with(STOPPED),
                _ => false,
            })
            .map(|t| t.name.clone())
            .collect()
    }

    /// Takes the outcomes of a second guest for the tests it ran, and its
    /// end marker.
    pub fn replace(&mut self, second: GuestReport) {
        for t in second.tests {
            match self.tests.iter_mut().find(|o| o.name == t.name) {
                Some(old) => old.outcome = t.outcome,
                None => self.tests.push(t),
            }
        }
        self.done = second.done;
        if self.release.is_none() {
            self.release = second.release;
        }
        if self.cgroup_fs.is_none() {
            self.cgroup_fs = second.cgroup_fs;
        }
    }

    /// `v2` for cgroup2, `v1` for a v1 hierarchy (or the tmpfs that holds v1
    /// hierarchies), else what the guest said.
    pub fn cgroup_mode(&self) -> String {
        match self.cgroup_fs.as_deref() {
            Some("cgroup2") => "v2".to_owned(),
            Some("cgroup" | "tmpfs") => "v1".to_owned(),
            Some(other) => other.to_owned(),
            None => "?".to_owned(),
        }
    }
}

/// What a test that was running when the guest stopped failed with.
const STOPPED: &str = "the guest stopped before the test reported";

/// The test whose announcement has been read but not yet its outcome.
struct Pending {
    name: String,
    /// What it printed after the announcement (measured figures, stderr).
    text: String,
}

/// Parses the results stream (CRs are ignored).
pub fn parse(stream: &str) -> GuestReport {
    let mut report = GuestReport::default();
    let mut pending: Option<Pending> = None;
    // Failure messages by test, from the "failures:" section.
    let mut messages: BTreeMap<String, String> = BTreeMap::new();
    let mut message_of: Option<String> = None;
    // Invocation arguments and whether it reported any test.
    let mut invocation: Option<(String, usize)> = None;

    let unfinished = |report: &mut GuestReport, pending: &mut Option<Pending>, why: &str| {
        if let Some(p) = pending.take() {
            let mut msg = why.to_owned();
            if !p.text.trim().is_empty() {
                msg.push_str(&format!("; it printed: {}", p.text.trim()));
            }
            report.tests.push(TestOutcome {
                name: p.name,
                outcome: Outcome::Failed(msg),
            });
        }
    };

    // A marker can follow a test's unfinished line (a test killed mid-line):
    // it starts a line of its own.
    let stream = stream
        .replace('\r', "")
        .replace(&format!("{MARK} "), &format!("\n{MARK} "));
    for line in stream.split('\n') {
        if let Some(marker) = line.strip_prefix(MARK).and_then(|m| m.strip_prefix(' ')) {
            let (key, value) = marker.split_once(' ').unwrap_or((marker, ""));
            let value = value.trim();
            match key {
                "uname" => report.release = Some(value.to_owned()),
                "cgroup" => report.cgroup_fs = Some(value.to_owned()),
                "setup-failed" => report.setup_failed = Some(value.to_owned()),
                "run" => {
                    message_of = None;
                    report.started.push(value.to_owned());
                    invocation = Some((value.to_owned(), report.tests.len()));
                }
                "exit" => {
                    message_of = None;
                    let why = match value {
                        "137" => "killed by the guest's timeout before it reported".to_owned(),
                        code => format!("the test binary exited ({code}) before it reported"),
                    };
                    unfinished(&mut report, &mut pending, &why);
                    if let Some((args, first)) = invocation.take()
                        && value != "0"
                        && !report.tests[first..]
                            .iter()
                            .any(|t| matches!(t.outcome, Outcome::Failed(_)))
                    {
                        // A non-zero exit must show as a failure even when no
                        // test was announced (a crash at start-up, a bad filter).
                        report.tests.push(TestOutcome {
                            name: format!("(privileged {args})"),
                            outcome: Outcome::Failed(format!(
                                "the test binary exited with status {value} without a failed test"
                            )),
                        });
                    }
                }
                "done" => report.done = value.parse().ok(),
                _ => {}
            }
            continue;
        }
        if let Some(p) = &mut pending {
            if !p.text.is_empty() {
                p.text.push('\n');
            }
            p.text.push_str(line);
            let text = p.text.clone();
            if let Some(outcome) = outcome_of(&text) {
                let p = pending.take().expect("pending");
                report.tests.push(TestOutcome {
                    name: p.name,
                    outcome,
                });
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, after)) = rest.split_once(" ... ")
        {
            message_of = None;
            let name = name.trim().to_owned();
            match outcome_of(after) {
                Some(outcome) => report.tests.push(TestOutcome { name, outcome }),
                None => {
                    pending = Some(Pending {
                        name,
                        text: after.to_owned(),
                    })
                }
            }
            continue;
        }
        if line.starts_with("test result:") || line == "failures:" {
            message_of = None;
            continue;
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" ----"))
        {
            message_of = Some(name.to_owned());
            messages.entry(name.to_owned()).or_default();
            continue;
        }
        if let Some(name) = &message_of {
            let m = messages.entry(name.clone()).or_default();
            if !m.is_empty() {
                m.push('\n');
            }
            m.push_str(line);
        }
    }
    unfinished(&mut report, &mut pending, STOPPED);
    for t in &mut report.tests {
        if let Outcome::Failed(msg) = &mut t.outcome
            && msg.is_empty()
            && let Some(m) = messages.get(&t.name)
        {
            *msg = m.trim().to_owned();
        }
    }
    report
}

/// The outcome at the end of the text after `test NAME ... `, if it is there.
fn outcome_of(text: &str) -> Option<Outcome> {
    let trimmed = text.trim();
    // Ignored tests print nothing before their reason.
    if let Some(rest) = trimmed.strip_prefix("ignored") {
        return Some(Outcome::Ignored(reason(rest)));
    }
    let last = trimmed.lines().last().unwrap_or_default();
    let word = last.rsplit(char::is_whitespace).next().unwrap_or_default();
    match word {
        "ok" => Some(Outcome::Passed),
        "FAILED" => Some(Outcome::Failed(String::new())),
        _ => last
            .find(" ignored (")
            .filter(|_| last.ends_with(')'))
            .map(|i| Outcome::Ignored(reason(&last[i + " ignored".len()..]))),
    }
}

/// libtest-mimic prints `ignored (REASON)`.
fn reason(text: &str) -> String {
    let text = text.trim();
    text.strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(text)
        .to_owned()
}

/// One row of the final matrix.
pub struct Row {
    pub kernel: String,
    pub release: String,
    pub cgroup: String,
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    pub not_run: usize,
    pub seconds: f64,
    /// `ok`, `FAILED`, or why the guest did not report.
    pub verdict: String,
    /// The tests that failed or did not report.
    pub not_ok: Vec<String>,
}

pub fn matrix(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<7} {:<24} {:<7} {:>6} {:>6} {:>7} {:>7} {:>7}  {}\n",
        "kernel",
        "guest release",
        "cgroup",
        "passed",
        "failed",
        "ignored",
        "not run",
        "time",
        "verdict"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<7} {:<24} {:<7} {:>6} {:>6} {:>7} {:>7} {:>6.0}s  {}\n",
            r.kernel,
            r.release,
            r.cgroup,
            r.passed,
            r.failed,
            r.ignored,
            r.not_run,
            r.seconds,
            r.verdict
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "@@vm uname 6.1.0-56-amd64\r
@@vm cgroup cgroup2\r
@@vm cpus 2\r
@@vm run --exact quota_only\r
\r
running 1 test\r
test quota_only ... [throttled 79.1 %] ok\r
\r
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 20 filtered out; finished in 4.01s\r
@@vm exit 0\r
@@vm run --exact nested\r
running 1 test\r
test nested     ... [child throttled 0 %] FAILED\r
\r
failures:\r
\r
---- nested ----\r
throttled 0.000, expected 0.7..0.9\r
second line\r
\r
\r
failures:\r
    nested\r
\r
test result: FAILED. 0 passed; 1 failed; 0 ignored\r
@@vm exit 101\r
@@vm run --exact jvm\r
test jvm ... ignored (no OpenJDK (javac); `cargo xtask test` installs openjdk-17-jdk-headless)\r
@@vm exit 0\r
@@vm run --exact hangs\r
test hangs ... [partial figures]@@vm exit 137\r
@@vm run --exact nope\r
running 0 tests\r
@@vm exit 2\r
@@vm done 1\r
";

    #[test]
    fn every_test_gets_an_outcome() {
        let r = parse(STREAM);
        assert_eq!(r.release.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(r.cgroup_mode(), "v2");
        assert_eq!(r.done, Some(1));
        let outcomes: Vec<(&str, &Outcome)> = r
            .tests
            .iter()
            .map(|t| (t.name.as_str(), &t.outcome))
            .collect();
        assert_eq!(outcomes[0], ("quota_only", &Outcome::Passed));
        assert_eq!(
            outcomes[1],
            (
                "nested",
                &Outcome::Failed("throttled 0.000, expected 0.7..0.9\nsecond line".into())
            )
        );
        assert_eq!(
            outcomes[2],
            (
                "jvm",
                &Outcome::Ignored(
                    "no OpenJDK (javac); `cargo xtask test` installs openjdk-17-jdk-headless"
                        .into()
                )
            )
        );
        let Outcome::Failed(msg) = outcomes[3].1 else {
            panic!("a killed test must fail: {:?}", outcomes[3]);
        };
        assert!(msg.contains("timeout") && msg.contains("[partial figures]"));
        assert_eq!(outcomes[4].0, "(privileged --exact nope)");
        assert_eq!((r.passed(), r.failed(), r.ignored()), (1, 3, 1));
    }

    #[test]
    fn output_between_announcement_and_outcome_is_skipped() {
        let r = parse(
            "test a ... [x]\ncould not remove test cgroup /sys/fs/cgroup/t\nok\n\
             test b ... ignored\ntest c ... FAILED\ntest d ... [x] ignored (no v2)\n",
        );
        assert_eq!(r.tests[0].outcome, Outcome::Passed);
        assert_eq!(r.tests[1].outcome, Outcome::Ignored(String::new()));
        assert_eq!(r.tests[2].outcome, Outcome::Failed(String::new()));
        assert_eq!(r.tests[3].outcome, Outcome::Ignored("no v2".into()));
    }

    #[test]
    fn a_guest_that_stops_mid_test_fails_it_and_runs_no_more() {
        let mut r = parse("@@vm run --exact a\ntest a ... ");
        assert!(matches!(&r.tests[0].outcome, Outcome::Failed(m) if m.contains("stopped")));
        assert_eq!(r.done, None);
        r.add_not_run(&[
            ("--exact a".into(), "a".into()),
            ("--exact b".into(), "b".into()),
        ]);
        assert_eq!(r.tests.len(), 2);
        assert_eq!(r.tests[1].name, "b");
        assert_eq!(r.not_run(), 1);
    }

    #[test]
    fn matrix_has_a_row_per_kernel() {
        let rows = [Row {
            kernel: "6.1".into(),
            release: "6.1.0-56-amd64".into(),
            cgroup: "v2".into(),
            passed: 10,
            failed: 2,
            ignored: 3,
            not_run: 0,
            seconds: 301.4,
            verdict: "FAILED".into(),
            not_ok: vec!["quota_only".into(), "nested".into()],
        }];
        let m = matrix(&rows);
        assert!(
            m.lines()
                .nth(1)
                .unwrap()
                .starts_with("6.1     6.1.0-56-amd64")
        );
        assert!(m.contains("FAILED"));
        assert_eq!(
            crate::vm::problem(&rows[0]).as_deref(),
            Some("the 6.1 guest (FAILED): quota_only, nested")
        );
    }

    #[test]
    fn a_second_guest_completes_what_the_first_did_not_finish() {
        let mut first = parse(
            "@@vm uname 6.12\n@@vm run --exact a\ntest a ... ok\n@@vm exit 0\n@@vm run --exact b\ntest b ... ",
        );
        first.add_not_run(&[
            ("--exact a".into(), "a".into()),
            ("--exact b".into(), "b".into()),
            ("--exact c".into(), "c".into()),
        ]);
        assert_eq!(first.interrupted(), ["b", "c"]);
        let second = parse(
            "@@vm run --exact b\ntest b ... ok\n@@vm exit 0\n@@vm run --exact c\ntest c ... ok\n@@vm exit 0\n@@vm done 0\n",
        );
        first.replace(second);
        assert_eq!((first.passed(), first.failed(), first.not_run()), (3, 0, 0));
        assert_eq!(first.done, Some(0));
        assert_eq!(first.release.as_deref(), Some("6.12"));
    }
}
