//! Fuzzing of the dump reader: whatever the input, an error or a dump, never
//! a panic; and whatever parses renders, in every renderer, without a panic
//! and without a control character reaching the terminal.

use proptest::prelude::*;
use serde_json::Value;

use super::{
    VERSION, parse,
    tests::{V0, v1},
};
use crate::{diff, hdr::tests::crafted, html, report};

/// Bytes flipped, dropped or inserted at chosen places.
fn damage(bytes: &mut Vec<u8>, edits: Vec<(prop::sample::Index, u8, u8)>) {
    for (at, byte, kind) in edits {
        let i = at.index(bytes.len());
        match kind {
            0 => bytes[i] = byte,
            1 => {
                bytes.remove(i);
            }
            _ => bytes.insert(i, byte),
        }
    }
}

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8)
}

/// Where the leaves of a JSON document are (numbers and strings), as JSON
/// pointers, in document order.
fn leaves(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            let key = k.replace('~', "~0").replace('/', "~1");
            leaves(v, &format!("{at}/{key}"), out)
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, &format!("{at}/{i}"), out)),
        Value::Number(_) | Value::String(_) => out.push(at.to_owned()),
        _ => {}
    }
}

/// A value to put in a leaf: figures at the edges of their types, and
/// strings with control characters, escapes and bidi overrides in them.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            0u64,
            1,
            999,
            1 << 32,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX
        ])
        .prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "(\\PC|[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{202e}\\u{2066}]){0,24}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

/// Renders `rec` in every renderer, compared with `other` in the diff, and
/// checks that nothing a terminal (or a browser, for bidi overrides) would
/// act on gets through but the renderers' own line ends.
fn render_all(rec: &crate::recording::Recording, other: &crate::recording::Recording) {
    for top in [0, 1, 20] {
        let options = report::TextOptions {
            top,
            details: top.min(3),
        };
        let text = report::render(rec, options);
        let diffed = diff::render(rec, other, top) + &diff::render(other, rec, top);
        let page = html::render(rec, top);
        for out in [text, diffed, page] {
            assert!(
                !out.chars()
                    .any(|c| c != '\n' && crate::format::is_unsafe(c)),
                "raw control character in {out:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever the bytes, the reader answers with a dump or an error.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse(&bytes);
    }

    /// A real dump with bytes flipped, dropped or cut off: same.
    #[test]
    fn damaged_dumps_never_panic(edits in edits(), cut in any::<prop::sample::Index>()) {
        let mut bytes = v1().into_bytes();
        damage(&mut bytes, edits);
        let keep = cut.index(bytes.len() + 1);
        let _ = parse(&bytes[..keep]);
    }

    /// The same for record JSON from before the dump format (version 0), which
    /// carries buckets instead of HdrHistograms and takes the upgrade path.
    #[test]
    fn damaged_version_0_inputs_never_panic(edits in edits(), cut in any::<prop::sample::Index>()) {
        let mut bytes = V0.as_bytes().to_vec();
        damage(&mut bytes, edits);
        let keep = cut.index(bytes.len() + 1);
        let _ = parse(&bytes[..keep]);
    }

    /// Structurally valid JSON with wrong values in the right places.
    #[test]
    fn wrong_values_never_panic(
        count in any::<u64>(), max in any::<u64>(), version in any::<u32>(),
        hdr in "[A-Za-z0-9+/=]{0,64}",
    ) {
        let dump = v1()
            .replacen("\"count\":", &format!("\"count\":{count},\"x\":"), 1)
            .replacen("\"max_ns\":", &format!("\"max_ns\":{max},\"y\":"), 1)
            .replacen("\"hdr\":\"", &format!("\"hdr\":\"{hdr}"), 1)
            .replacen(&format!("\"format_version\":{VERSION}"), &format!("\"format_version\":{version}"), 1);
        let _ = parse(dump.as_bytes());
    }

    /// HdrHistograms with chosen headers (significant digits, ranges), any
    /// payload, in a dump: an error or the dump, never a panic.
    #[test]
    fn chosen_histogram_headers_never_panic(
        digits in prop_oneof![0..8u32, any::<u32>()],
        low in prop_oneof![Just(1u64), 0..4096u64, any::<u64>()],
        high in prop_oneof![Just(u64::MAX / 2), Just(u64::MAX), any::<u64>()],
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let text = crafted(digits, low, high, &payload);
        let _ = crate::hdr::buckets(&text);
        let dump = v1().replacen("\"hdr\":\"", &format!("\"hdr\":\"{text}\",\"was\":\""), 1);
        let _ = parse(dump.as_bytes());
    }

    /// The outer layer of an HdrHistogram: any cookie, any claimed lengths,
    /// any bytes, deflated or not.
    #[test]
    fn chosen_histogram_envelopes_never_panic(
        cookie in prop_oneof![Just(0x1c84_9314u32), Just(0x1c84_9313u32), any::<u32>()],
        length in prop_oneof![Just(None), any::<u32>().prop_map(Some)],
        rest in proptest::collection::vec(any::<u8>(), 0..64),
        deflate in any::<bool>(),
    ) {
        use base64::Engine as _;
        use std::io::Write as _;
        let body = if deflate {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&rest).unwrap();
            z.finish().unwrap()
        } else {
            rest
        };
        let mut bytes = cookie.to_be_bytes().to_vec();
        bytes.extend(length.unwrap_or(body.len() as u32).to_be_bytes());
        bytes.extend(body);
        let _ = crate::hdr::buckets(&base64::engine::general_purpose::STANDARD.encode(bytes));
    }

    /// Whatever parses renders: a dump with any of its figures and strings
    /// replaced renders in the terminal report, the diff and the page
    /// without a panic, and nothing but line ends among the control
    /// characters reaches the terminal.
    #[test]
    fn whatever_parses_renders(
        version_0 in any::<bool>(),
        changes in proptest::collection::vec((any::<prop::sample::Index>(), leaf()), 1..12),
    ) {
        let text = if version_0 { V0.to_owned() } else { v1() };
        let mut doc: Value = serde_json::from_str(&text).unwrap();
        for (at, value) in changes {
            let mut found = Vec::new();
            leaves(&doc, "", &mut found);
            if let Some(leaf) = doc.pointer_mut(&found[at.index(found.len())]) {
                *leaf = value;
            }
        }
        let Ok(rec) = parse(doc.to_string().as_bytes()) else {
            return Ok(());
        };
        let original = parse(v1().as_bytes()).unwrap();
        render_all(&rec, &original);
        render_all(&rec, &rec);
    }
}
