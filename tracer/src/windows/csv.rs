//! `--windows FILE`: any application's moments to explain, as CSV lines of
//! `start,end,label` (a slow request, a batch step, a failed health check).
//!
//! `start` and `end` are `CLOCK_MONOTONIC` nanoseconds (an integer: what
//! `clock_gettime(CLOCK_MONOTONIC)`, Go's `runtime.nanotime`, Java's
//! `System.nanoTime()` or Python's `time.monotonic_ns()` give), exact on the
//! recording's axis, or RFC 3339 times (`2026-12-03T22:27:26.663Z`, an offset
//! or `Z` required), placed by the wall clock. The label is the rest of the
//! line, commas and all. Blank lines, `#` comments and a first line of
//! `start,end,label` are ignored; a line that does not read is counted and
//! named, never fatal.

use super::Stamp;

/// One window as the file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub start: Stamp,
    pub end: Stamp,
    pub label: String,
}

/// The windows read, and the lines that were not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rows {
    pub rows: Vec<Row>,
    /// Line numbers (from 1) that did not read, and why: the first few.
    pub bad: Vec<(usize, String)>,
    /// Lines that did not read, all of them.
    pub skipped: u64,
}

/// Bad lines named at most (the rest are only counted).
const NAMED: usize = 5;

pub fn parse(text: &str) -> Rows {
    let mut out = Rows::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && line.starts_with("start,")) {
            continue;
        }
        match row(line) {
            Ok(r) => out.rows.push(r),
            Err(why) => {
                out.skipped += 1;
                if out.bad.len() < NAMED {
                    out.bad.push((i + 1, why));
                }
            }
        }
    }
    out
}

fn row(line: &str) -> Result<Row, String> {
    let mut fields = line.splitn(3, ',');
    let (Some(start), Some(end)) = (fields.next(), fields.next()) else {
        return Err("expected start,end,label".into());
    };
    let label = fields.next().unwrap_or("").trim().to_owned();
    let (start, end) = (stamp(start.trim())?, stamp(end.trim())?);
    match (start, end) {
        (Stamp::Monotonic(a), Stamp::Monotonic(b)) | (Stamp::Unix(a), Stamp::Unix(b)) if b < a => {
            Err("it ends before it starts".into())
        }
        (Stamp::Monotonic(_), Stamp::Monotonic(_)) | (Stamp::Unix(_), Stamp::Unix(_)) => {
            Ok(Row { start, end, label })
        }
        _ => Err("start and end must be on the same clock (both ns, or both RFC 3339)".into()),
    }
}

fn stamp(field: &str) -> Result<Stamp, String> {
    if !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit()) {
        return field
            .parse()
            .map(Stamp::Monotonic)
            .map_err(|_| format!("{field:?} is too large for nanoseconds"));
    }
    rfc3339_ns(field).map(Stamp::Unix).ok_or_else(|| {
        format!(
            "{:?} is neither CLOCK_MONOTONIC nanoseconds nor an RFC 3339 time with an offset",
            crate::format::visible(field)
        )
    })
}

/// `2026-12-03T22:27:26.663Z`, `2026-12-03T17:27:26.663123-05:00`,
/// `2026-12-03 22:27:26Z`: ns since the Unix epoch.
fn rfc3339_ns(text: &str) -> Option<u64> {
    if text.len() < 20 {
        return None;
    }
    let civil = super::civil_seconds(text)?;
    let mut rest = &text[19..];
    let mut frac_ns = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &f[..digits.min(9)];
        frac_ns = kept.parse::<i64>().ok()? * 10i64.pow(9 - kept.len() as u32);
        rest = &f[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && zone.as_bytes()[3] == b':' => {
            let sign = match &zone[..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let (h, m) = (zone.get(1..3)?, zone.get(4..6)?);
            if !h.bytes().chain(m.bytes()).all(|c| c.is_ascii_digit()) {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let secs = civil - offset_s;
    u64::try_from(secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_on_either_clock_with_their_labels() {
        let text = "start,end,label\n\
            # a comment\n\
            \n\
            16760701278697,16760725000000,GET /checkout, slow\n\
            2026-12-03T22:27:26.663Z,2026-12-03T17:27:27.001500-05:00,batch step 3\n\
            100,200\n";
        let r = parse(text);
        assert_eq!(r.skipped, 0, "{:?}", r.bad);
        assert_eq!(
            r.rows,
            [
                Row {
                    start: Stamp::Monotonic(16_760_701_278_697),
                    end: Stamp::Monotonic(16_760_725_000_000),
                    label: "GET /checkout, slow".into(),
                },
                Row {
                    start: Stamp::Unix(1_796_336_846_663_000_000),
                    end: Stamp::Unix(1_796_336_847_001_500_000),
                    label: "batch step 3".into(),
                },
                Row {
                    start: Stamp::Monotonic(100),
                    end: Stamp::Monotonic(200),
                    label: String::new(),
                },
            ]
        );
    }

    #[test]
    fn bad_lines_are_named_and_counted_never_fatal() {
        let text = "5,4,backwards\n\
            1,2026-12-03T22:27:26Z,mixed\n\
            2026-12-03T22:27:26,2026-12-03T22:27:27,no zone\n\
            \u{1b}[2J,5,escape\n\
            99999999999999999999999,1,huge\n\
            just one field\n\
            1,2,fine\n";
        let r = parse(text);
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.skipped, 6);
        assert_eq!(r.bad.len(), NAMED, "only the first few named");
        assert_eq!(r.bad[0], (1, "it ends before it starts".into()));
        assert!(r.bad[1].1.contains("same clock"), "{:?}", r.bad[1]);
        assert!(r.bad[2].1.contains("RFC 3339"), "{:?}", r.bad[2]);
        assert!(
            !r.bad[3].1.contains('\u{1b}'),
            "shown escaped: {:?}",
            r.bad[3]
        );
    }

    #[test]
    fn rfc3339_reads_fractions_and_offsets() {
        assert_eq!(rfc3339_ns("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(rfc3339_ns("1970-01-01T00:00:00.000000001Z"), Some(1));
        assert_eq!(rfc3339_ns("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(rfc3339_ns("1970-01-01 00:00:00.5z"), Some(500_000_000));
        assert_eq!(rfc3339_ns("1970-01-01T00:00:00.Z"), None);
        assert_eq!(rfc3339_ns("1970-01-01T00:00:00+0100"), None);
        assert_eq!(rfc3339_ns("1969-12-31T23:59:59Z"), None, "before the epoch");
    }

    proptest::proptest! {
        /// Whatever the text, it reads without a panic.
        #[test]
        fn any_text_reads(text in "(\\PC|\\[|\\]|[0-9]|ms|ns|s|GC\\(|\\)|Pause |,|-|:|T|Z|\\.|\n){0,200}") {
            let _ = parse(&text);
        }
    }
}
