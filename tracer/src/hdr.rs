//! Histograms as HdrHistogram, the form other tools read: V2 compressed
//! serialization, base64 (what HdrHistogram's interval logs carry), so that a
//! dump's histograms open in any HdrHistogram implementation.
//!
//! Each of the tracer's buckets is recorded at its midpoint (its value if the
//! bucket is exact), the exact maximum at the maximum. Decoding is bounded: a
//! dump comes from anywhere, and the HdrHistogram header would otherwise decide
//! how much memory to allocate.

use std::{collections::BTreeMap, io::Read as _};

use anyhow::{Context as _, anyhow, bail, ensure};
use base64::Engine as _;
use hdrhistogram::{
    Histogram,
    serialization::{Deserializer, Serializer as _, V2DeflateSerializer},
};
use tracer_common::hist::{SUB_BUCKETS, bucket_index, bucket_range};

/// Three significant digits: far finer than the tracer's own buckets, so each
/// bucket maps back exactly.
const SIGFIG: u8 = 3;
/// `V2CompressedEncodingCookieBase | 0x10` and `V2EncodingCookieBase | 0x10`.
const COMPRESSED_COOKIE: u32 = 0x1c84_9314;
const COOKIE: u32 = 0x1c84_9313;
/// Limits for decoding: far above what the tracer writes (a few hundred bytes).
const MAX_ENCODED: usize = 1 << 20;
const MAX_DECODED: u64 = 8 << 20;

/// The HdrHistogram of buckets `[low, high, count]` with exact maximum `max`.
fn histogram(buckets: &[[u64; 3]], max: u64) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, u64::MAX / 2, SIGFIG)?;
    for &[low, high, count] in buckets {
        let value = if bucket_index(low) < SUB_BUCKETS as usize {
            low
        } else {
            (low + (high.min(max.saturating_add(1)) - low) / 2).min(max)
        };
        h.record_n(value, count)?;
    }
    Ok(h)
}

/// Base64 of the V2 compressed serialization of the buckets.
pub fn encode(buckets: &[[u64; 3]], max: u64) -> anyhow::Result<String> {
    let h = histogram(buckets, max)?;
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(&h, &mut bytes)
        .map_err(|e| anyhow!("serializing an HdrHistogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Decodes [`encode`]'s output, refusing inputs that would make the decoder
/// allocate more than a few megabytes.
pub fn decode(text: &str) -> anyhow::Result<Histogram<u64>> {
    ensure!(
        text.len() <= MAX_ENCODED,
        "HdrHistogram of {} bytes is too large",
        text.len()
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("HdrHistogram is not valid base64")?;
    let word = |b: &[u8], at: usize| -> anyhow::Result<u32> {
        Ok(u32::from_be_bytes(
            b.get(at..at + 4)
                .ok_or_else(|| anyhow!("HdrHistogram truncated"))?
                .try_into()?,
        ))
    };
    ensure!(
        word(&bytes, 0)? == COMPRESSED_COOKIE,
        "not a V2 compressed HdrHistogram"
    );
    let compressed_len = word(&bytes, 4)? as usize;
    let compressed = bytes
        .get(8..8 + compressed_len)
        .ok_or_else(|| anyhow!("HdrHistogram truncated"))?;
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(compressed)
        .take(MAX_DECODED)
        .read_to_end(&mut inflated)
        .context("HdrHistogram does not inflate")?;
    ensure!(
        word(&inflated, 0)? == COOKIE,
        "not a V2 HdrHistogram inside"
    );
    let payload_len = u64::from(word(&inflated, 4)?);
    // Header: cookie, payload length, offset, digits (4 bytes each), low, high,
    // ratio (8 bytes each).
    ensure!(
        payload_len <= inflated.len() as u64 - 40.min(inflated.len() as u64),
        "HdrHistogram payload length {payload_len} exceeds its data"
    );
    let digits = word(&inflated, 12)?;
    ensure!(digits <= 5, "HdrHistogram with {digits} significant digits");
    Deserializer::new()
        .deserialize(&mut inflated.as_slice())
        .map_err(|e| anyhow!("HdrHistogram does not decode: {e:?}"))
}

/// The tracer's buckets an encoded histogram was made from. Exact: HdrHistogram's
/// value ranges at three significant digits nest inside the tracer's buckets,
/// so every value recorded maps back to the bucket it came from.
pub fn buckets(text: &str) -> anyhow::Result<Vec<[u64; 3]>> {
    let h = decode(text)?;
    let mut counts: BTreeMap<usize, u64> = BTreeMap::new();
    for v in h.iter_recorded() {
        let n = counts
            .entry(bucket_index(v.value_iterated_to()))
            .or_default();
        *n = n.saturating_add(v.count_at_value());
    }
    Ok(counts
        .into_iter()
        .map(|(i, n)| {
            let (low, high) = bucket_range(i);
            [low, high, n]
        })
        .collect())
}

/// Checks that `buckets` are buckets of the tracer's layout, in order.
pub fn check_buckets(buckets: &[[u64; 3]]) -> anyhow::Result<u64> {
    let mut last_low = None;
    let mut total: u64 = 0;
    for &[low, high, count] in buckets {
        let index = bucket_index(low);
        if bucket_range(index) != (low, high) {
            bail!("[{low}, {high}) is not a bucket of the tracer's histograms");
        }
        if last_low.is_some_and(|l| l >= low) {
            bail!("buckets out of order at {low}");
        }
        if count == 0 {
            bail!("empty bucket [{low}, {high}) listed");
        }
        last_low = Some(low);
        total = total
            .checked_add(count)
            .ok_or_else(|| anyhow!("bucket counts overflow"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use tracer_common::hist::LatencyHist;

    use super::*;
    use crate::histogram::sparse_buckets;

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
        let h = decode(&text).unwrap();
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
            assert!(decode(bad).is_err(), "{bad:?} accepted");
        }
        // A header claiming a huge payload does not make the decoder allocate it.
        let mut bytes = COMPRESSED_COOKIE.to_be_bytes().to_vec();
        bytes.extend(u32::MAX.to_be_bytes());
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(decode(&text).is_err());
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
}
