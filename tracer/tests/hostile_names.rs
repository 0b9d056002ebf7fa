//! Names a dump carries (process names, cgroup paths, the host, the kernel,
//! anything it says) reach the terminal only as visible text: a process can
//! name itself with escape sequences, and a dump can come from anyone.

use std::path::PathBuf;

use tracer::{
    diff, dump,
    recording::Recording,
    report::{self, TextOptions},
};

/// A title change, a clear screen, a bell, a bidi override, a C1 control
/// (CSI), DEL and a line break of their own.
const HOSTILE: [&str; 7] = [
    "\x1b]0;pwned\x07",
    "\x1b[2J",
    "\x07",
    "\u{202e}cod.exe",
    "\u{9b}31m",
    "\x7f",
    "x\nverdict: healthy",
];

fn fixture() -> Recording {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dump-v1.json");
    dump::read(&path).unwrap()
}

/// The fixture with every name replaced by one that carries `evil`.
fn hostile(evil: &str) -> Recording {
    let mut doc: serde_json::Value = serde_json::to_value(fixture()).unwrap();
    fn walk(v: &mut serde_json::Value, key: &str, evil: &str) {
        match v {
            // Whose quota it was: paths as keys.
            serde_json::Value::Object(m) if key == "throttled_by" => {
                *m = std::mem::take(m)
                    .into_iter()
                    .map(|(k, v)| (format!("/{evil}{k}"), v))
                    .collect();
            }
            serde_json::Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    walk(v, k, evil);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| walk(v, key, evil)),
            serde_json::Value::String(s)
                if !matches!(key, "format" | "hdr" | "verdict" | "cgroup_mode") =>
            {
                // Paths must stay paths for the reader.
                *s = if s.starts_with('/') {
                    format!("/{evil}{s}")
                } else {
                    format!("{evil}{s}")
                };
            }
            _ => {}
        }
    }
    walk(&mut doc, "", evil);
    dump::parse(doc.to_string().as_bytes()).unwrap()
}

fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[test]
fn names_with_control_characters_are_shown_escaped() {
    let plain = fixture();
    let plain_report = report::render(&plain, TextOptions::default());
    let plain_diff = diff::render(&plain, &plain, 10);
    for evil in HOSTILE {
        let rec = hostile(evil);
        let text = report::render(&rec, TextOptions::default());
        let diffed = diff::render(&rec, &rec, 10);
        for (what, out, plain) in [
            ("report", &text, &plain_report),
            ("diff", &diffed, &plain_diff),
        ] {
            let bad: Vec<char> = out.chars().filter(|&c| unsafe_char(c)).collect();
            assert!(
                bad.is_empty(),
                "{what} of {evil:?} lets {bad:?} through:\n{out}"
            );
            // A line break in a name does not make a line of its own.
            assert_eq!(
                out.lines().count(),
                plain.lines().count(),
                "{what} of {evil:?}:\n{out}"
            );
        }
        assert!(
            text.contains("\\x1b") || !evil.contains('\x1b'),
            "ESC not shown as \\x1b:\n{text}"
        );
    }
}
