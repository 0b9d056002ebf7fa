//! Histograms as HdrHistogram, the form other tools read: V2 compressed
//! serialization, base64 (what HdrHistogram's interval logs carry), so that a
//! dump's histograms open in any HdrHistogram implementation.
//!
//! Each of the tracer's buckets is recorded at its midpoint (its value if the
//! bucket is exact), the exact maximum at the maximum.
//!
//! Reading does not use the HdrHistogram library's decoder: it allocates the
//! whole counts array the header asks for (53 MB for a header of five
//! significant digits over the tracer's range, in a string of 50 bytes) and
//! walks it. Here the header must be the one the tracer writes, and the
//! payload is read as the sparse list it is: the work is proportional to the
//! bytes read, whatever they claim.

use std::{collections::BTreeMap, io::Read as _};

use anyhow::{Context as _, anyhow, bail, ensure};
use base64::Engine as _;
#[cfg(test)]
use hdrhistogram::Histogram;
use tracer_common::hist::{SUB_BUCKETS, bucket_index, bucket_range};

/// The range every histogram of the tracer is written with: 1 ns to 2^63 - 1
/// ns, three significant digits (far finer than the tracer's own buckets, so
/// each bucket maps back exactly).
const LOWEST: u64 = 1;
const HIGHEST: u64 = u64::MAX / 2;
const SIGFIG: u8 = 3;
/// How HdrHistogram lays out that range: three digits need 2,048 sub-buckets
/// (2 × 10^3 rounded up to a power of two), of which each bucket after the
/// first uses the upper half; 53 buckets reach 2^63, plus the lower half of
/// the first: 54 × 1,024 count slots.
const HALF_MAGNITUDE: u32 = 10;
const SLOTS: usize = 54 << HALF_MAGNITUDE;
/// `V2CompressedEncodingCookieBase | 0x10` and `V2EncodingCookieBase | 0x10`.
const COMPRESSED_COOKIE: u32 = 0x1c84_9314;
const COOKIE: u32 = 0x1c84_9313;
/// The V2 header: cookie, payload length, normalizing offset, digits (4 bytes
/// each), lowest, highest, integer-to-double ratio (8 bytes each).
const HEADER: usize = 40;
/// Limits for decoding. The tracer's histograms have at most about 530
/// non-empty buckets, each one count of at most 9 bytes and one run of zeros
/// of at most 3: under 7 KiB of payload, and less once deflated and in base64.
const MAX_ENCODED: usize = 64 << 10;
const MAX_INFLATED: u64 = 64 << 10;
/// The tracer's histograms inflate to about their size in base64 (0.6 to 1.6
/// times); deflate can inflate a thousandfold, which would let a file of many
/// tiny histograms cost a thousand times its size to read.
const MAX_INFLATION: u64 = 8;

/// The HdrHistogram library's histogram of buckets `[low, high, count]` with
/// exact maximum `max`: what [`encode`] must write the serialization of.
#[cfg(test)]
fn histogram(buckets: &[[u64; 3]], max: u64) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(LOWEST, HIGHEST, SIGFIG)?;
    for &[low, high, count] in buckets {
        h.record_n(recorded_value(low, high, max), count)?;
    }
    Ok(h)
}

/// The library's serialization of the buckets.
#[cfg(test)]
fn library_encode(buckets: &[[u64; 3]], max: u64) -> anyhow::Result<String> {
    use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
    let h = histogram(buckets, max)?;
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(&h, &mut bytes)
        .map_err(|e| anyhow!("serializing an HdrHistogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Base64 of the V2 compressed serialization of the buckets: the bytes the
/// HdrHistogram library writes for them (a test holds the two equal), made
/// from the sparse buckets directly. The library's way allocates and walks
/// all 55,296 slots of the range for each histogram, which a dump's timeline
/// of thousands of histograms would pay thousands of times.
pub fn encode(buckets: &[[u64; 3]], max: u64) -> anyhow::Result<String> {
    use std::io::Write as _;
    // The slots as the library fills them: each bucket's count at the value
    // it is recorded at, in slot order (buckets are in value order, and
    // their values in slot order).
    let mut slots: Vec<(usize, u64)> = Vec::with_capacity(buckets.len());
    for &[low, high, count] in buckets {
        let slot = slot_of(recorded_value(low, high, max));
        ensure!(slot < SLOTS, "value beyond the HdrHistogram's range");
        match slots.last_mut() {
            Some((last, n)) if *last == slot => *n += count,
            Some((last, _)) if *last > slot => bail!("buckets out of order"),
            _ => slots.push((slot, count)),
        }
    }
    let mut payload = Vec::with_capacity(slots.len() * 4);
    let mut next = 0;
    for (slot, count) in slots {
        if count == 0 {
            continue;
        }
        // A run of empty slots is one negative number, a lone one a zero.
        match slot - next {
            0 => {}
            1 => varint_to(&mut payload, 0),
            zeros => varint_to(&mut payload, zigzag(-(zeros as i64))),
        }
        let count = i64::try_from(count).context("count beyond HdrHistogram's range")?;
        varint_to(&mut payload, zigzag(count));
        next = slot + 1;
    }
    if payload.is_empty() {
        // The library writes an empty histogram as its first slot's zero.
        varint_to(&mut payload, 0);
    }
    let mut inner = Vec::with_capacity(HEADER + payload.len());
    inner.extend(COOKIE.to_be_bytes());
    inner.extend((payload.len() as u32).to_be_bytes());
    inner.extend(0u32.to_be_bytes());
    inner.extend(u32::from(SIGFIG).to_be_bytes());
    inner.extend(LOWEST.to_be_bytes());
    inner.extend(HIGHEST.to_be_bytes());
    inner.extend(1.0f64.to_bits().to_be_bytes());
    inner.extend(payload);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&inner)?;
    let compressed = z.finish()?;
    let mut bytes = Vec::with_capacity(8 + compressed.len());
    bytes.extend(COMPRESSED_COOKIE.to_be_bytes());
    bytes.extend((compressed.len() as u32).to_be_bytes());
    bytes.extend(compressed);
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The value a bucket `[low, high)` is recorded at: its value if exact, else
/// its midpoint, never above the histogram's exact maximum.
fn recorded_value(low: u64, high: u64, max: u64) -> u64 {
    if bucket_index(low) < SUB_BUCKETS as usize {
        low
    } else {
        // Saturating: a version 0 dump may claim a maximum below its
        // buckets (its reader refuses that, with a message).
        (low + high.min(max.saturating_add(1)).saturating_sub(low) / 2).min(max)
    }
}

/// The slot of the tracer's layout that counts `value` (the inverse of
/// [`slot_value`]).
fn slot_of(value: u64) -> usize {
    let half = 1u64 << HALF_MAGNITUDE;
    if value < 2 * half {
        return value as usize;
    }
    let bucket = value.ilog2() - HALF_MAGNITUDE;
    let sub = value >> bucket;
    (((bucket as u64 + 1) << HALF_MAGNITUDE) + (sub - half)) as usize
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// Writes [`varint`]'s form.
fn varint_to(out: &mut Vec<u8>, mut v: u64) {
    for _ in 0..8 {
        if v < 0x80 {
            out.push(v as u8);
            return;
        }
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn word(b: &[u8], at: usize) -> anyhow::Result<u32> {
    let bytes = b
        .get(at..at + 4)
        .ok_or_else(|| anyhow!("HdrHistogram truncated"))?;
    Ok(u32::from_be_bytes(bytes.try_into()?))
}

fn long(b: &[u8], at: usize) -> anyhow::Result<u64> {
    let bytes = b
        .get(at..at + 8)
        .ok_or_else(|| anyhow!("HdrHistogram truncated"))?;
    Ok(u64::from_be_bytes(bytes.try_into()?))
}

/// The V2 payload of an encoded histogram, its header checked.
fn payload(text: &str) -> anyhow::Result<Vec<u8>> {
    ensure!(
        text.len() <= MAX_ENCODED,
        "HdrHistogram of {} bytes is too large (the tracer writes at most a few KiB)",
        text.len()
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("HdrHistogram is not valid base64")?;
    ensure!(
        word(&bytes, 0)? == COMPRESSED_COOKIE,
        "not a V2 compressed HdrHistogram"
    );
    let compressed_len = word(&bytes, 4)? as usize;
    let compressed = bytes
        .get(8..8 + compressed_len)
        .ok_or_else(|| anyhow!("HdrHistogram truncated"))?;
    let limit = (text.len() as u64 * MAX_INFLATION).clamp(HEADER as u64 * 4, MAX_INFLATED);
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(compressed)
        .take(limit + 1)
        .read_to_end(&mut inflated)
        .context("HdrHistogram does not inflate")?;
    ensure!(
        inflated.len() as u64 <= limit,
        "HdrHistogram of {} bytes inflates to more than {limit}",
        text.len()
    );
    ensure!(
        word(&inflated, 0)? == COOKIE,
        "not a V2 HdrHistogram inside"
    );
    let payload_len = word(&inflated, 4)? as usize;
    let offset = word(&inflated, 8)?;
    let digits = word(&inflated, 12)?;
    let (low, high) = (long(&inflated, 16)?, long(&inflated, 24)?);
    let ratio = f64::from_bits(long(&inflated, 32)?);
    if (digits, low, high) != (u32::from(SIGFIG), LOWEST, HIGHEST) {
        bail!(
            "HdrHistogram's range is {low} to {high} at {digits} significant digits; the tracer \
             writes {LOWEST} to {HIGHEST} at {SIGFIG}"
        );
    }
    ensure!(
        offset == 0 && ratio == 1.0,
        "HdrHistogram with a normalizing offset or a value ratio (the tracer writes neither)"
    );
    inflated
        .get(HEADER..HEADER.saturating_add(payload_len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| anyhow!("HdrHistogram payload length {payload_len} exceeds its data"))
}

/// HdrHistogram's variable-length integer: 7 bits a byte, low first, at most
/// 9 bytes, the ninth giving all its 8 bits. Returns it and its length.
fn varint(bytes: &[u8]) -> anyhow::Result<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(9) {
        if i == 8 {
            return Ok((value | u64::from(b) << 56, 9));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    bail!("HdrHistogram payload ends inside a number")
}

/// The lowest value counted in slot `index` of the tracer's layout.
fn slot_value(index: usize) -> u64 {
    let half = 1usize << HALF_MAGNITUDE;
    let sub = (index & (half - 1)) + half;
    match (index >> HALF_MAGNITUDE).checked_sub(1) {
        // The lower half of the first bucket: values 0 to 1,023.
        None => (sub - half) as u64,
        Some(bucket) => (sub as u64) << bucket,
    }
}

/// The non-zero counts of an encoded histogram, as `(lowest value of the
/// slot, count)` in value order. The payload is a list of counts, one a
/// slot, in which a negative number `-n` stands for `n` empty slots.
fn counts(text: &str) -> anyhow::Result<Vec<(u64, u64)>> {
    let payload = payload(text)?;
    let mut out = Vec::new();
    let mut slot = 0usize;
    let mut rest = payload.as_slice();
    while !rest.is_empty() {
        let (raw, len) = varint(rest)?;
        rest = &rest[len..];
        // ZigZag: 0, -1, 1, -2, ... as 0, 1, 2, 3, ...
        let n = (raw >> 1) as i64 ^ -((raw & 1) as i64);
        if n < 0 {
            slot = usize::try_from(n.unsigned_abs())
                .ok()
                .and_then(|zeros| slot.checked_add(zeros))
                .filter(|&s| s <= SLOTS)
                .ok_or_else(|| anyhow!("HdrHistogram has counts beyond its range"))?;
        } else {
            ensure!(slot < SLOTS, "HdrHistogram has counts beyond its range");
            if n > 0 {
                out.push((slot_value(slot), n as u64));
            }
            slot += 1;
        }
    }
    Ok(out)
}

/// The tracer's buckets an encoded histogram was made from. Exact: HdrHistogram's
/// value ranges at three significant digits nest inside the tracer's buckets,
/// so every value recorded maps back to the bucket it came from.
pub fn buckets(text: &str) -> anyhow::Result<Vec<[u64; 3]>> {
    let mut by_bucket: BTreeMap<usize, u64> = BTreeMap::new();
    for (value, count) in counts(text)? {
        let n = by_bucket.entry(bucket_index(value)).or_default();
        *n = n
            .checked_add(count)
            .ok_or_else(|| anyhow!("HdrHistogram counts overflow"))?;
    }
    Ok(by_bucket
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
pub(crate) mod tests;
