//! HdrHistograms: round trips, interoperability, and what the decoder refuses.

use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use proptest::prelude::*;
use tracer_common::hist::LatencyHist;

use super::*;
use crate::histogram::sparse_buckets;

/// What another tool reads: the HdrHistogram library's own decoder.
fn library_decode(text: &str) -> Histogram<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .unwrap()
}

fn recorded(values: &[u64]) -> (Vec<[u64; 3]>, u64) {
    let mut h = LatencyHist::ZERO;
    for &v in values {
        h.record(v);
    }
    (sparse_buckets(&h), h.max_ns)
}

#[test]
fn round_trip_keeps_counts_and_quantiles() {
    let values: Vec<u64> = (1..=10_000u64).map(|i| i * 997).collect();
    let (b, max) = recorded(&values);
    let text = encode(&b, max).unwrap();
    assert!(text.starts_with("HISTF"), "{text}");
    let h = library_decode(&text);
    assert_eq!(h.len(), 10_000);
    // And back to exactly the tracer's buckets.
    assert_eq!(buckets(&text).unwrap(), b);
    // The tracer's buckets are at most 1/16 wide: quantiles within that.
    let p99 = h.value_at_quantile(0.99) as f64;
    let want = 9_900.0 * 997.0;
    assert!((p99 - want).abs() / want < 1.0 / 16.0, "{p99} vs {want}");
    assert!(h.max() <= max + max / 1000, "{} > {max}", h.max());
}

#[test]
fn empty_and_small_values() {
    let (b, max) = recorded(&[]);
    assert!(buckets(&encode(&b, max).unwrap()).unwrap().is_empty());
    let (b, max) = recorded(&[0, 0, 3, 15, 16, 1 << 37, u64::MAX / 4]);
    assert_eq!(buckets(&encode(&b, max).unwrap()).unwrap(), b);
}

#[test]
fn garbage_is_refused() {
    for bad in ["", "not base64!", "SElTVEZB", "AAAAAAAAAAAA"] {
        assert!(buckets(bad).is_err(), "{bad:?} accepted");
    }
    // A header claiming a huge payload does not make the decoder allocate it.
    let mut bytes = COMPRESSED_COOKIE.to_be_bytes().to_vec();
    bytes.extend(u32::MAX.to_be_bytes());
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    assert!(buckets(&text).is_err());
}

/// The base64 of a V2 compressed HdrHistogram with this header and payload.
pub(crate) fn crafted(digits: u32, low: u64, high: u64, payload: &[u8]) -> String {
    use std::io::Write as _;
    let mut inner = COOKIE.to_be_bytes().to_vec();
    inner.extend((payload.len() as u32).to_be_bytes());
    inner.extend(0u32.to_be_bytes());
    inner.extend(digits.to_be_bytes());
    inner.extend(low.to_be_bytes());
    inner.extend(high.to_be_bytes());
    inner.extend(1.0f64.to_be_bytes());
    inner.extend(payload);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&inner).unwrap();
    let z = z.finish().unwrap();
    let mut bytes = COMPRESSED_COOKIE.to_be_bytes().to_vec();
    bytes.extend((z.len() as u32).to_be_bytes());
    bytes.extend(z);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A header is a promise of memory: five significant digits over the
/// tracer's range would make the decoder allocate 53 MB for a 50-byte
/// string. Only the range the tracer writes is read.
#[test]
fn ranges_other_than_the_tracers_are_refused() {
    let ours = crafted(3, 1, u64::MAX / 2, &[]);
    assert!(buckets(&ours).unwrap().is_empty());
    for (digits, low, high) in [
        (5, 1, u64::MAX / 2),
        (4, 1, u64::MAX / 2),
        (2, 1, u64::MAX / 2),
        (3, 1_000, u64::MAX / 2),
        (3, 1, 1 << 40),
        (3, 1, u64::MAX),
    ] {
        let err = format!(
            "{:#}",
            buckets(&crafted(digits, low, high, &[])).unwrap_err()
        );
        assert!(
            err.contains("range") && err.contains(&format!("{digits} significant")),
            "({digits}, {low}, {high}): {err}"
        );
    }
}

/// Counts placed past the end of the range, and runs of zeros of any
/// length (the most negative number included), are refused.
#[test]
fn payloads_beyond_the_range_are_refused() {
    // HdrHistogram's ZigZag LEB128 (at most 9 bytes): 2 is +1, 1 is -1 (a run
    // of one zero).
    let leb = |mut v: u64| {
        let mut out = Vec::new();
        while out.len() < 8 && v >= 0x80 {
            out.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    };
    let zigzag = |n: i64| ((n << 1) ^ (n >> 63)) as u64;
    let mut past_the_end = leb(zigzag(-55_296));
    past_the_end.extend(leb(zigzag(1)));
    let mut payloads = vec![
        leb(zigzag(i64::MIN)),
        leb(zigzag(-i64::MAX)),
        past_the_end,
        // Three huge counts in slots of one tracer bucket (2,048 to 2,176 ns).
        [leb(zigzag(-2_048)), leb(zigzag(i64::MAX)).repeat(3)].concat(),
        vec![0x80; 20],
        // 40,000 empty slots written one by one: a few dozen bytes deflated.
        vec![0; 40_000],
    ];
    let mut just_inside = leb(zigzag(-55_295));
    just_inside.extend(leb(zigzag(1)));
    assert_eq!(
        buckets(&crafted(3, 1, u64::MAX / 2, &just_inside))
            .unwrap()
            .len(),
        1
    );
    for payload in payloads.drain(..) {
        assert!(
            buckets(&crafted(3, 1, u64::MAX / 2, &payload)).is_err(),
            "{payload:x?} accepted"
        );
    }
}

#[test]
fn bucket_lists_are_checked() {
    let (b, _) = recorded(&[5, 1_000, 1_000_000]);
    assert_eq!(check_buckets(&b).unwrap(), 3);
    assert!(check_buckets(&[[1000, 1001, 1]]).is_err(), "not a bucket");
    let mut reversed = b.clone();
    reversed.reverse();
    assert!(check_buckets(&reversed).is_err());
    assert!(check_buckets(&[[5, 6, 0]]).is_err());
}

/// The count slots are laid out as the library lays them out for the
/// tracer's range: their number, and the value each one counts.
#[test]
fn the_layout_is_the_librarys() {
    let h = Histogram::<u64>::new_with_bounds(LOWEST, HIGHEST, SIGFIG).unwrap();
    assert_eq!(h.distinct_values(), SLOTS);
    for slot in (0..SLOTS)
        .step_by(37)
        .chain([1_023, 1_024, 2_047, 2_048, SLOTS - 1])
    {
        let value = slot_value(slot);
        assert_eq!(h.lowest_equivalent(value), value, "slot {slot}");
        assert_eq!(slot_of(value), slot, "slot_of({value})");
        let mut one = h.clone();
        one.record(value).unwrap();
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&one, &mut bytes)
            .unwrap();
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(counts(&text).unwrap(), [(value, 1)], "slot {slot}");
    }
}

proptest! {
    /// The sparse decoder reads what the library's decoder reads.
    #[test]
    fn sparse_decoding_agrees_with_the_library(
        values in proptest::collection::vec((any::<u64>(), 1..1_000_000u64), 0..64),
    ) {
        let mut h = LatencyHist::ZERO;
        for (v, n) in values {
            // Any magnitude from 0 to the top of the range.
            let v = v >> (v % 64);
            for _ in 0..n % 4 + 1 {
                h.record(v.min(HIGHEST));
            }
        }
        let (b, max) = (sparse_buckets(&h), h.max_ns);
        let text = encode(&b, max).unwrap();
        let library: Vec<(u64, u64)> = library_decode(&text)
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let ours = counts(&text).unwrap();
        prop_assert_eq!(ours.len(), library.len());
        for ((value, n), (top, m)) in ours.iter().zip(&library) {
            prop_assert_eq!(n, m);
            prop_assert!(value <= top && bucket_index(*value) == bucket_index(*top));
        }
        prop_assert_eq!(buckets(&text).unwrap(), b);
    }

    /// The encoder writes, byte for byte, what the library writes for the
    /// same histogram: any HdrHistogram tool reads it as the library's own.
    #[test]
    fn the_encoding_is_the_librarys(
        values in proptest::collection::vec((any::<u64>(), 1..1_000_000u64), 0..64),
        huge in any::<bool>(),
    ) {
        let mut h = LatencyHist::ZERO;
        for (v, n) in values {
            let v = v >> (v % 64);
            for _ in 0..n % 4 + 1 {
                h.record(v.min(HIGHEST));
            }
        }
        let mut b = sparse_buckets(&h);
        if huge && let Some(first) = b.first_mut() {
            // Counts far beyond what a varint's first bytes hold.
            first[2] = 1 << 62;
        }
        prop_assert_eq!(encode(&b, h.max_ns).unwrap(), library_encode(&b, h.max_ns).unwrap());
    }
}

#[test]
fn edge_histograms_encode_as_the_library_does() {
    for values in [
        &[][..],
        &[0],
        &[1],
        &[2047],
        &[2048],
        &[0, 2],
        &[HIGHEST],
        &[5, 5_000_000_000],
    ] {
        let (b, max) = recorded(values);
        assert_eq!(
            encode(&b, max).unwrap(),
            library_encode(&b, max).unwrap(),
            "{values:?}"
        );
    }
}

/// A histogram as wide as the tracer's get (every bucket from 1 µs to 2 s)
/// inflates to about its size in base64, far inside the limit on inflation.
#[test]
fn wide_histograms_inflate_little() {
    let values: Vec<u64> = (0..5_000u64)
        .map(|i| 1_000 + (i * i * i) % 2_000_000_000)
        .collect();
    let (b, max) = recorded(&values);
    assert!(b.len() > 200, "{} buckets", b.len());
    let text = encode(&b, max).unwrap();
    let inflated = payload(&text).unwrap().len() + HEADER;
    let ratio = inflated as f64 / text.len() as f64;
    eprintln!(
        "{} bytes of base64 inflate to {inflated}: {ratio:.2}",
        text.len()
    );
    assert!(ratio < MAX_INFLATION as f64 / 4.0, "{ratio}");
    assert_eq!(buckets(&text).unwrap(), b);
}
