//! How figures are written for people, and how durations are read from them:
//! one place for every renderer (terminal, HTML, diff, verdicts) and parser
//! (flags, configuration).

use std::{borrow::Cow, fmt::Write as _, time::Duration};

/// Whether a terminal would act on `c` instead of showing it: C0 controls
/// (ESC starts escape sequences: a window title, a cleared screen, a
/// hyperlink), DEL, C1 controls (U+009B is CSI on its own), and the
/// bidirectional overrides and isolates, which reorder the rest of the line.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` as it may reach a terminal or a page: every character
/// [`is_unsafe`] written out visibly (`\x1b`, `\n`, `\u{202e}`). Every
/// string a report shows from a recording goes through here: process names
/// are whatever a process calls itself, and a dump comes from anywhere.
/// Backslashes are left alone, so that systemd's `\x2d` in unit names reads
/// as it always did.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Human-readable duration: `850 ns`, `12.3 µs`, `4.56 ms`, `1.23 s`.
pub fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    let (value, unit) = if ns < 1_000 {
        return format!("{ns} ns");
    } else if ns < 1_000_000 {
        (v / 1e3, "µs")
    } else if ns < 1_000_000_000 {
        (v / 1e6, "ms")
    } else {
        (v / 1e9, "s")
    };
    if value >= 100.0 {
        format!("{value:.0} {unit}")
    } else if value >= 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.2} {unit}")
    }
}

/// `1234567` -> `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `part` as a percentage of `whole`; 0 when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `part` as a percentage of `whole` for a table cell: `12.3 %`, or `-` when
/// there is no whole.
pub fn percent_cell(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1} %", percent(part, whole))
}

/// `10s`, `500ms`, `2m`, `1h`, `1.5s`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: use e.g. 10s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    if !(seconds > 0.0 && seconds.is_finite() && seconds < 365.0 * 86400.0) {
        return Err(format!(
            "duration {text:?} must be positive and under a year"
        ));
    }
    let d = Duration::from_secs_f64(seconds);
    if d.is_zero() {
        // Positive, but under a nanosecond: a zero period panics tokio's timers.
        return Err(format!("duration {text:?} is under a nanosecond"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(
            visible("/system.slice/a\\x2db.service"),
            "/system.slice/a\\x2db.service"
        );
        assert!(matches!(visible("GC Thread#0"), Cow::Borrowed(_)));
        assert_eq!(visible("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(visible("\x1b[2J"), "\\x1b[2J");
        assert_eq!(visible("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(visible("\x00\x7f\u{9b}"), "\\x00\\x7f\\x9b");
        assert_eq!(visible("\u{202e}exe.doc"), "\\u{202e}exe.doc");
        assert_eq!(visible("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        // Other non-ASCII text is text.
        assert_eq!(visible("µs – kworker/0:1 ✓"), "µs – kworker/0:1 ✓");
    }

    #[test]
    fn durations_are_written_with_three_figures() {
        assert_eq!(fmt_ns(0), "0 ns");
        assert_eq!(fmt_ns(999), "999 ns");
        assert_eq!(fmt_ns(1_500), "1.50 µs");
        assert_eq!(fmt_ns(12_340), "12.3 µs");
        assert_eq!(fmt_ns(4_560_000), "4.56 ms");
        assert_eq!(fmt_ns(250_000_000), "250 ms");
        assert_eq!(fmt_ns(1_230_000_000), "1.23 s");
    }

    #[test]
    fn counts_and_shares() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_000), "1,000");
        assert_eq!(group_digits(1_234_567), "1,234,567");
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(1, 0), 0.0);
        assert_eq!(percent_cell(1, 8), "12.5 %");
        assert_eq!(percent_cell(1, 0), "-");
    }

    #[test]
    fn durations_are_read() {
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in [
            "",
            "s",
            "0",
            "-1s",
            "3 parsecs",
            "1e9h",
            "abc",
            "0.0000000001s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
