//! A per-card behavioural profile, bounded in size whatever the card's history, with a
//! compact versioned binary encoding (what the SQL layer stores in a `bytea` per card).
//!
//! What it keeps and what happens at the bounds:
//! - the recent payments `(time, amount)` within [`WINDOW_7D`] of the latest payment, at
//!   most [`MAX_RECENT`]; past the cap the oldest are dropped, so `count_7d`/`sum_7d` (and,
//!   for a card with more than 256 payments a day, the 24-hour ones) then count only the
//!   256 most recent payments;
//! - Welford running mean/variance of the amount, overall and for at most
//!   [`MAX_CATEGORIES`] categories (least recently used evicted; an evicted category is
//!   "new" again when it comes back);
//! - the [`MAX_MERCHANTS`] most recently used merchants, as 32-bit hashes ([`merchant_hash`]);
//! - time and place of the latest payment, the first payment's time;
//! - 24 hour-of-day counts, in the card's local time: UTC shifted by the profile's
//!   `utc_offset_secs` (0 = UTC), fixed when the profile is created.
//!
//! Out-of-order payments (earlier than the latest seen) are folded in deterministically:
//! they enter the windows at their own time (so windows of later payments count them), the
//! statistics and habits as any payment, but the "previous payment" (time and place) stays
//! the latest one. The worst-case encoding is [`MAX_ENCODED_BYTES`] bytes.

use super::error::{FraudError, Result};

pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const WINDOW_1H: i64 = 3600 * MICROS_PER_SEC;
pub const WINDOW_24H: i64 = 24 * WINDOW_1H;
pub const WINDOW_7D: i64 = 7 * WINDOW_24H;
pub const MAX_RECENT: usize = 256;
pub const MAX_CATEGORIES: usize = 16;
pub const MAX_MERCHANTS: usize = 64;
/// Current encoding version written by [`Profile::to_bytes`]; every earlier one is still
/// read. A profile is rewritten, and logged to WAL whole, at every payment, so each
/// version made it smaller: version 1 stored each recent payment in 16 bytes; version 2
/// stores the gap to the previous one as a varint and the amount as a varint of cents when
/// that gives back the very same double, usually 5 to 7 bytes in all; version 3 stores the
/// merchants' hashes in 4 bytes instead of 8 and the hour-of-day counts as varints (1 or 2
/// bytes instead of 4): 300 bytes less for a card with 64 merchants.
pub const PROFILE_VERSION: u8 = 3;
const MAGIC: &[u8; 2] = b"FP";
/// The fixed part of versions 1 and 2 (hour counts in 4 bytes each).
const HEADER_BYTES: usize = 2 + 1 + 1 + 4 + 8 + 24 + 8 + 8 + 8 + 8 + 24 * 4 + 1 + 1 + 2;
/// The most bytes the hour counts take in version 3 (a u32 varint is at most 5 bytes).
const V3_HOURS_MAX_BYTES: usize = 24 * 5;
const CATEGORY_BYTES: usize = 8 + 24;
/// Most bytes of one recent payment in version 2: a 10-byte varint gap (the first
/// payment's time takes 8 fixed bytes instead) and a tag byte before a raw double.
const RECENT_MAX_BYTES: usize = 10 + 9;
/// Upper bound of [`Profile::to_bytes`]'s length: 5 828 bytes (version 2: 6 060, version
/// 1: 5 292).
pub const MAX_ENCODED_BYTES: usize = HEADER_BYTES - 24 * 4
    + V3_HOURS_MAX_BYTES
    + MAX_CATEGORIES * CATEGORY_BYTES
    + MAX_MERCHANTS * 4
    + MAX_RECENT * RECENT_MAX_BYTES;

// The bound promised in the module documentation ("a few KB").
const _: () = assert!(MAX_ENCODED_BYTES <= 6 * 1024);

/// One payment as the scorer sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Payment<'a> {
    /// Unix time in microseconds, UTC (a `timestamptz`'s value).
    pub at_micros: i64,
    pub amount: f64,
    pub merchant: &'a str,
    pub category: &'a str,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

impl Payment<'_> {
    /// Refuses values that would poison the running statistics.
    pub fn check(&self) -> Result<()> {
        if !self.amount.is_finite() {
            return Err(FraudError::InvalidPayment("amount is not finite".into()));
        }
        if let (Some(lat), Some(lon)) = (self.lat, self.lon) {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(FraudError::InvalidPayment(
                    "latitude/longitude out of range".into(),
                ));
            }
        }
        Ok(())
    }

    /// The location when both coordinates are given.
    pub fn location(&self) -> Option<(f64, f64)> {
        self.lat.zip(self.lon)
    }
}

/// Welford's running mean and variance.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Welford {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Welford {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Sample variance (n - 1); 0 below two values.
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).max(0.0)
        }
    }

    pub fn std_dev(&self) -> f64 {
        self.variance().sqrt()
    }
}

/// Statistics of one category, keyed by the hash of its name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CategoryStats {
    pub hash: u64,
    pub amount: Welford,
}

/// 64-bit FNV-1a: stable across Rust versions and machines (unlike `DefaultHasher`), so
/// stored hashes stay meaningful.
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A merchant's 32-bit hash: [`fnv1a`] folded (its high half xor its low half). Of a card's
/// 64 merchants, a new one is taken for a known one with a chance of 64 in 2^32.
pub fn merchant_hash(name: &str) -> u32 {
    fold(fnv1a(name))
}

fn fold(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// Great-circle distance in km (haversine, mean Earth radius 6371.0088 km).
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1) = (a.0.to_radians(), a.1.to_radians());
    let (la2, lo2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().min(1.0).asin()
}

/// The behavioural profile of one card.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Profile {
    pub utc_offset_secs: i32,
    pub count: u64,
    pub amount: Welford,
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
    pub last_location: Option<(f64, f64)>,
    pub hours: [u32; 24],
    /// Most recently used first.
    pub categories: Vec<CategoryStats>,
    /// Most recently used first ([`merchant_hash`]).
    pub merchants: Vec<u32>,
    /// Sorted by time, oldest first.
    pub recent: Vec<(i64, f64)>,
}

impl Profile {
    /// An empty profile whose hour-of-day habit is kept in UTC + `utc_offset_secs`.
    pub fn new(utc_offset_secs: i32) -> Profile {
        Profile {
            utc_offset_secs,
            ..Profile::default()
        }
    }

    /// Local hour (0..24) and minute of the day (0..1440) of `at_micros`.
    pub fn local_minute_of_day(&self, at_micros: i64) -> u32 {
        let secs = at_micros.div_euclid(MICROS_PER_SEC) + self.utc_offset_secs as i64;
        (secs.rem_euclid(86_400) / 60) as u32
    }

    pub fn category(&self, name: &str) -> Option<&CategoryStats> {
        let h = fnv1a(name);
        self.categories.iter().find(|c| c.hash == h)
    }

    pub fn knows_merchant(&self, name: &str) -> bool {
        self.merchants.contains(&merchant_hash(name))
    }

    /// (count, sum) of kept payments in `(at - window, at]`.
    pub fn window(&self, at: i64, window: i64) -> (u32, f64) {
        let from = at.saturating_sub(window);
        let mut n = 0;
        let mut sum = 0.0;
        for &(t, a) in &self.recent {
            if t > from && t <= at {
                n += 1;
                sum += a;
            }
        }
        (n, sum)
    }

    /// Folds `p` into the profile (after its features were computed).
    pub fn update(&mut self, p: &Payment<'_>) -> Result<()> {
        p.check()?;
        self.count += 1;
        self.amount.push(p.amount);
        self.first_at = Some(self.first_at.map_or(p.at_micros, |f| f.min(p.at_micros)));
        if self.last_at.is_none_or(|l| p.at_micros >= l) {
            self.last_at = Some(p.at_micros);
            // A payment without a place leaves the last known place in force.
            if let Some(loc) = p.location() {
                self.last_location = Some(loc);
            }
        }
        let hour = (self.local_minute_of_day(p.at_micros) / 60) as usize;
        if let Some(h) = self.hours.get_mut(hour) {
            *h = h.saturating_add(1);
        }
        // Category: move to front, evict the least recently used past the cap.
        let ch = fnv1a(p.category);
        let mut cat = match self.categories.iter().position(|c| c.hash == ch) {
            Some(i) => self.categories.remove(i),
            None => CategoryStats {
                hash: ch,
                amount: Welford::default(),
            },
        };
        cat.amount.push(p.amount);
        self.categories.insert(0, cat);
        self.categories.truncate(MAX_CATEGORIES);
        let mh = merchant_hash(p.merchant);
        if let Some(i) = self.merchants.iter().position(|&m| m == mh) {
            self.merchants.remove(i);
        }
        self.merchants.insert(0, mh);
        self.merchants.truncate(MAX_MERCHANTS);
        // Recent payments: insert in time order (after equal times), prune the window.
        let pos = self.recent.partition_point(|&(t, _)| t <= p.at_micros);
        self.recent.insert(pos, (p.at_micros, p.amount));
        let latest = self.last_at.unwrap_or(p.at_micros);
        let keep_from = latest.saturating_sub(WINDOW_7D);
        let stale = self.recent.partition_point(|&(t, _)| t <= keep_from);
        let over = self.recent.len().saturating_sub(MAX_RECENT);
        self.recent.drain(..stale.max(over));
        Ok(())
    }

    /// The versioned binary encoding (little-endian), at most [`MAX_ENCODED_BYTES`].
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode(PROFILE_VERSION)
    }

    fn encode(&self, version: u8) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            HEADER_BYTES
                + self.categories.len() * CATEGORY_BYTES
                + self.merchants.len() * 4
                + self.recent.len() * 8,
        );
        b.extend_from_slice(MAGIC);
        b.push(version);
        let flags = self.first_at.is_some() as u8
            | (self.last_at.is_some() as u8) << 1
            | (self.last_location.is_some() as u8) << 2;
        b.push(flags);
        b.extend_from_slice(&self.utc_offset_secs.to_le_bytes());
        b.extend_from_slice(&self.count.to_le_bytes());
        put_welford(&mut b, &self.amount);
        b.extend_from_slice(&self.first_at.unwrap_or(0).to_le_bytes());
        b.extend_from_slice(&self.last_at.unwrap_or(0).to_le_bytes());
        let (lat, lon) = self.last_location.unwrap_or((0.0, 0.0));
        b.extend_from_slice(&lat.to_le_bytes());
        b.extend_from_slice(&lon.to_le_bytes());
        for &h in &self.hours {
            if version >= 3 {
                put_varint(&mut b, h as u64);
            } else {
                b.extend_from_slice(&h.to_le_bytes());
            }
        }
        b.push(self.categories.len() as u8);
        b.push(self.merchants.len() as u8);
        b.extend_from_slice(&(self.recent.len() as u16).to_le_bytes());
        for c in &self.categories {
            b.extend_from_slice(&c.hash.to_le_bytes());
            put_welford(&mut b, &c.amount);
        }
        for &m in &self.merchants {
            if version >= 3 {
                b.extend_from_slice(&m.to_le_bytes());
            } else {
                // Folding a hash with a zero high half gives it back.
                b.extend_from_slice(&(m as u64).to_le_bytes());
            }
        }
        let mut previous = None;
        for &(t, a) in &self.recent {
            if version == 1 {
                b.extend_from_slice(&t.to_le_bytes());
                b.extend_from_slice(&a.to_le_bytes());
                continue;
            }
            match previous {
                None => b.extend_from_slice(&t.to_le_bytes()),
                // Kept in time order (`update` inserts in order, decoding checks it), so
                // the gap is never negative.
                Some(p) => {
                    debug_assert!(t >= p);
                    put_varint(&mut b, t.abs_diff(p))
                }
            }
            previous = Some(t);
            match cents(a) {
                Some(c) => put_varint(&mut b, c << 1),
                None => {
                    b.push(1);
                    b.extend_from_slice(&a.to_le_bytes());
                }
            }
        }
        b
    }

    /// Decodes [`Profile::to_bytes`] output, refusing other versions, truncation, trailing
    /// bytes and impossible contents.
    pub fn from_bytes(bytes: &[u8]) -> Result<Profile> {
        let mut r = Reader { b: bytes, i: 0 };
        if r.take(2)? != MAGIC {
            return Err(corrupt("not a fraud profile"));
        }
        let version = r.u8()?;
        if !(1..=PROFILE_VERSION).contains(&version) {
            return Err(FraudError::UnknownProfileVersion(version));
        }
        let flags = r.u8()?;
        if flags & !7 != 0 {
            return Err(corrupt("unknown flags"));
        }
        let utc_offset_secs = i32::from_le_bytes(r.array()?);
        if utc_offset_secs.abs() > 18 * 3600 {
            return Err(corrupt("UTC offset beyond 18 hours"));
        }
        let count = r.u64()?;
        let amount = r.welford()?;
        let first_at = r.i64()?;
        let last_at = r.i64()?;
        let lat = r.f64()?;
        let lon = r.f64()?;
        let mut hours = [0u32; 24];
        for h in hours.iter_mut() {
            *h = if version >= 3 {
                u32::try_from(r.varint()?).map_err(|_| corrupt("an hour count overflows"))?
            } else {
                u32::from_le_bytes(r.array()?)
            };
        }
        let n_cat = r.u8()? as usize;
        let n_merch = r.u8()? as usize;
        let n_recent = u16::from_le_bytes(r.array()?) as usize;
        if n_cat > MAX_CATEGORIES || n_merch > MAX_MERCHANTS || n_recent > MAX_RECENT {
            return Err(corrupt("more entries than the bounds allow"));
        }
        let mut categories = Vec::with_capacity(n_cat);
        for _ in 0..n_cat {
            let hash = r.u64()?;
            categories.push(CategoryStats {
                hash,
                amount: r.welford()?,
            });
        }
        let mut merchants = Vec::with_capacity(n_merch);
        for _ in 0..n_merch {
            merchants.push(if version >= 3 {
                u32::from_le_bytes(r.array()?)
            } else {
                fold(r.u64()?)
            });
        }
        let mut recent: Vec<(i64, f64)> = Vec::with_capacity(n_recent);
        for _ in 0..n_recent {
            let (t, a) = match (version, recent.last()) {
                (1, _) => (r.i64()?, r.f64()?),
                (_, None) => (r.i64()?, r.amount()?),
                (_, Some(&(p, _))) => {
                    let t = i64::try_from(r.varint()?)
                        .ok()
                        .and_then(|gap| p.checked_add(gap))
                        .ok_or_else(|| corrupt("a recent payment's time overflows"))?;
                    (t, r.amount()?)
                }
            };
            if !a.is_finite() || recent.last().is_some_and(|&(p, _)| p > t) {
                return Err(corrupt("recent payments out of order or not finite"));
            }
            recent.push((t, a));
        }
        if r.i != bytes.len() {
            return Err(corrupt("trailing bytes"));
        }
        if amount.n != count {
            return Err(corrupt(
                "payment count disagrees with the amount statistics",
            ));
        }
        let has_loc = flags & 4 != 0;
        if has_loc && (!(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon)) {
            return Err(corrupt("location out of range"));
        }
        Ok(Profile {
            utc_offset_secs,
            count,
            amount,
            first_at: (flags & 1 != 0).then_some(first_at),
            last_at: (flags & 2 != 0).then_some(last_at),
            last_location: has_loc.then_some((lat, lon)),
            hours,
            categories,
            merchants,
            recent,
        })
    }
}

fn corrupt(what: &str) -> FraudError {
    FraudError::CorruptProfile(what.into())
}

/// `a` as a whole number of cents when dividing that number by 100 gives back exactly the
/// same double (IEEE division rounds correctly, so this holds for any amount parsed from a
/// decimal with at most two places, below 2^52 cents), else None.
fn cents(a: f64) -> Option<u64> {
    let c = (a * 100.0).round();
    (a.is_sign_positive() && c < (1u64 << 52) as f64 && (c / 100.0).to_bits() == a.to_bits())
        .then_some(c as u64)
}

/// LEB128: seven bits a byte, low bits first, the high bit set on all but the last byte.
fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_welford(b: &mut Vec<u8>, w: &Welford) {
    b.extend_from_slice(&w.n.to_le_bytes());
    b.extend_from_slice(&w.mean.to_le_bytes());
    b.extend_from_slice(&w.m2.to_le_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self
            .b
            .get(self.i..self.i.saturating_add(n))
            .ok_or_else(|| corrupt("truncated"))?;
        self.i += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64> {
        let v = f64::from_le_bytes(self.array()?);
        if v.is_finite() {
            Ok(v)
        } else {
            Err(corrupt("a stored number is not finite"))
        }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = self.u8()?;
            let bits = (byte & 0x7f) as u64;
            if i == 9 && bits > 1 {
                return Err(corrupt("a varint overflows 64 bits"));
            }
            v |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("a varint is longer than 10 bytes"))
    }

    /// A version 2 amount: cents shifted left by one (an even varint), or 1 and a double.
    fn amount(&mut self) -> Result<f64> {
        let v = self.varint()?;
        match v {
            1 => self.f64(),
            v if v & 1 == 0 && (v >> 1) < (1u64 << 52) => Ok((v >> 1) as f64 / 100.0),
            _ => Err(corrupt("an amount's tag is unknown")),
        }
    }

    fn welford(&mut self) -> Result<Welford> {
        let w = Welford {
            n: self.u64()?,
            mean: self.f64()?,
            m2: self.f64()?,
        };
        if w.m2 < 0.0 {
            return Err(corrupt("negative variance"));
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pay(at_secs: i64, amount: f64, merchant: &str, category: &str) -> Payment<'static> {
        let merchant: &'static str = Box::leak(merchant.to_string().into_boxed_str());
        let category: &'static str = Box::leak(category.to_string().into_boxed_str());
        Payment {
            at_micros: at_secs * MICROS_PER_SEC,
            amount,
            merchant,
            category,
            lat: None,
            lon: None,
        }
    }

    #[test]
    fn welford_matches_two_pass() {
        let xs = [3.0, 10.0, 10.5, 200.0, 7.25];
        let mut w = Welford::default();
        xs.iter().for_each(|&x| w.push(x));
        let mean = xs.iter().sum::<f64>() / 5.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0;
        assert!((w.mean - mean).abs() < 1e-12);
        assert!((w.variance() - var).abs() < 1e-9);
    }

    #[test]
    fn windows_and_bounds() {
        let mut p = Profile::new(0);
        let t0 = 1_700_000_000;
        for i in 0..1000 {
            p.update(&pay(
                t0 + i * 60,
                1.0,
                &format!("m{i}"),
                &format!("c{}", i % 40),
            ))
            .unwrap();
        }
        assert_eq!(p.recent.len(), MAX_RECENT);
        assert_eq!(p.categories.len(), MAX_CATEGORIES);
        assert_eq!(p.merchants.len(), MAX_MERCHANTS);
        assert!(p.knows_merchant("m999") && !p.knows_merchant("m0"));
        assert!(p.category("c39").is_some() && p.category("c0").is_none());
        let now = (t0 + 999 * 60) * MICROS_PER_SEC;
        // (now - 1h, now]: the payments at minutes 940..=999.
        assert_eq!(p.window(now, WINDOW_1H), (60, 60.0));
        let bytes = p.to_bytes();
        assert_eq!(MAX_ENCODED_BYTES, 5828);
        // A minute apart and whole amounts: 4 bytes of gap and 2 of amount a payment; 60
        // payments in each of 17 hours (one byte each, as are the 7 empty hours).
        assert_eq!(
            bytes.len(),
            HEADER_BYTES - 24 * 4 + 24 + 16 * 32 + 64 * 4 + 8 + 2 + 255 * 6
        );
        assert_eq!(Profile::from_bytes(&bytes).unwrap(), p);
        // Version 2: merchants in 8 bytes, hour counts in 4.
        let v2 = p.encode(2);
        assert_eq!(v2.len(), HEADER_BYTES + 16 * 32 + 64 * 8 + 8 + 2 + 255 * 6);
        assert_eq!(v2.len() - bytes.len(), 256 + 72);
        assert_eq!(Profile::from_bytes(&v2).unwrap(), p);
        // A profile stored by version 1 (16 bytes a payment) still reads the same.
        let v1 = p.encode(1);
        assert_eq!(v1.len(), 5292);
        assert_eq!(Profile::from_bytes(&v1).unwrap(), p);
        // Payments older than 7 days before the latest are dropped.
        p.update(&pay(t0 + 30 * 86_400, 2.0, "m", "c")).unwrap();
        assert_eq!(p.recent.len(), 1);
    }

    #[test]
    fn out_of_order_keeps_latest_as_previous() {
        let mut p = Profile::new(3600);
        let mut a = pay(10_000, 5.0, "m", "c");
        a.lat = Some(48.85);
        a.lon = Some(2.35);
        p.update(&a).unwrap();
        let mut b = pay(5_000, 7.0, "m", "c");
        b.lat = Some(51.5);
        b.lon = Some(-0.12);
        p.update(&b).unwrap();
        assert_eq!(p.last_at, Some(10_000 * MICROS_PER_SEC));
        assert_eq!(p.last_location, Some((48.85, 2.35)));
        assert_eq!(p.first_at, Some(5_000 * MICROS_PER_SEC));
        assert_eq!(p.recent[0].0, 5_000 * MICROS_PER_SEC);
        assert_eq!(p.window(10_000 * MICROS_PER_SEC, WINDOW_24H), (2, 12.0));
        // Local hour: 10 000 s = 02:46 UTC = 03:46 at UTC+1.
        assert_eq!(p.local_minute_of_day(10_000 * MICROS_PER_SEC), 3 * 60 + 46);
        assert_eq!(p.hours[3], 1);
    }

    #[test]
    fn encoding_refuses_bad_bytes() {
        let mut p = Profile::new(0);
        p.update(&pay(1000, 12.5, "m", "c")).unwrap();
        let bytes = p.to_bytes();
        assert_eq!(Profile::from_bytes(&bytes).unwrap(), p);
        for n in 0..bytes.len() {
            assert!(
                matches!(
                    Profile::from_bytes(&bytes[..n]),
                    Err(FraudError::CorruptProfile(_))
                ),
                "truncated at {n}"
            );
        }
        let mut v4 = bytes.clone();
        v4[2] = 4;
        assert_eq!(
            Profile::from_bytes(&v4),
            Err(FraudError::UnknownProfileVersion(4))
        );
        let mut v0 = bytes.clone();
        v0[2] = 0;
        assert_eq!(
            Profile::from_bytes(&v0),
            Err(FraudError::UnknownProfileVersion(0))
        );
        let mut long = bytes.clone();
        long.push(0);
        assert!(Profile::from_bytes(&long).is_err());
        let mut magic = bytes;
        magic[0] = b'X';
        assert!(Profile::from_bytes(&magic).is_err());
        assert!(Profile::from_bytes(&Profile::new(0).to_bytes()).is_ok());
    }

    #[test]
    fn every_amount_and_gap_comes_back_bit_for_bit() {
        let amounts = [
            0.0,
            -0.0,
            0.01,
            0.1 + 0.2,
            12.5,
            42.17,
            1e-3,
            123_456.789,
            99_999_999.99,
            45_035_996_273_704.95,
            1.5e15,
            5e-324,
            -7.25,
        ];
        let mut p = Profile::new(0);
        let t0 = 1_700_000_000 * MICROS_PER_SEC;
        let gaps = [
            0,
            1,
            127,
            128,
            16_384,
            59_999_999,
            WINDOW_24H,
            WINDOW_7D / 2,
        ];
        let mut t = t0;
        for (i, &a) in amounts.iter().enumerate() {
            t += gaps[i % gaps.len()];
            let mut q = pay(0, a, "m", "c");
            q.at_micros = t;
            p.update(&q).unwrap();
        }
        assert_eq!(p.recent.len(), amounts.len());
        let back = Profile::from_bytes(&p.to_bytes()).unwrap();
        for ((t1, a1), (t2, a2)) in p.recent.iter().zip(&back.recent) {
            assert_eq!((t1, a1.to_bits()), (t2, a2.to_bits()));
        }
        assert_eq!(back, p);
        // Cents are kept only where they give the same double back.
        assert_eq!(cents(42.17), Some(4217));
        assert_eq!(cents(0.1 + 0.2), None);
        assert_eq!(cents(-0.0), None);
        assert_eq!(cents(-7.25), None);
    }

    #[test]
    fn bad_varints_and_amount_tags_are_refused() {
        let mut p = Profile::new(0);
        p.update(&pay(1000, 12.5, "m", "c")).unwrap();
        p.update(&pay(1060, 3.0, "m", "c")).unwrap();
        let good = p.to_bytes();
        // The last payment: its gap (60 s, 4 varint bytes) and its amount (300 cents, 2).
        let tail = good.len() - 6;
        let with_tail = |t: &[u8]| [&good[..tail], t].concat();
        assert_eq!(Profile::from_bytes(&with_tail(&good[tail..])).unwrap(), p);
        let corrupt =
            |b: &[u8]| matches!(Profile::from_bytes(b), Err(FraudError::CorruptProfile(_)));
        // A gap of more than 64 bits, one longer than 10 bytes, one past i64::MAX.
        assert!(corrupt(&with_tail(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00
        ])));
        assert!(corrupt(&with_tail(&[0x80; 11])));
        assert!(corrupt(&with_tail(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00
        ])));
        // An odd amount tag other than 1, and a raw double that is not finite.
        let gap = &good[tail..tail + 4];
        assert!(corrupt(&with_tail(&[gap, &[3]].concat())));
        let nan = f64::NAN.to_le_bytes();
        assert!(corrupt(&with_tail(&[gap, &[1], &nan[..]].concat())));
    }

    /// The stored formats are pinned: version 1 is what 0.4.0 and earlier wrote (and what
    /// an upgraded database still holds until each card's next payment), version 2 what
    /// development builds of 0.5.0 wrote, version 3 what is written now; a change to any
    /// encoder fails here.
    #[test]
    fn stored_formats_keep_their_bytes() {
        let mut p = Profile::new(3600);
        let mut a = pay(1_700_000_000, 42.17, "shop", "grocery");
        a.lat = Some(48.85);
        a.lon = Some(2.35);
        p.update(&a).unwrap();
        p.update(&pay(1_700_000_090, 0.1 + 0.2, "shop", "grocery"))
            .unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let (v1, v2, v3) = (hex(&p.encode(1)), hex(&p.encode(2)), hex(&p.to_bytes()));
        assert_eq!(v1.len(), 2 * (HEADER_BYTES + CATEGORY_BYTES + 8 + 2 * 16));
        assert_eq!(
            v2.len(),
            2 * (HEADER_BYTES + CATEGORY_BYTES + 8 + 8 + 2 + 4 + 9)
        );
        // Everything before the recent payments is the same in both versions.
        let recent_at = 2 * (HEADER_BYTES + CATEGORY_BYTES + 8);
        assert_eq!(v1[6..recent_at], v2[6..recent_at]);
        assert_eq!(&v1[..6], "465001");
        assert_eq!(&v2[..6], "465002");
        assert_eq!(&v1[recent_at..], V1_RECENT);
        assert_eq!(&v2[recent_at..], V2_RECENT);
        // Version 3: the 24 hour counts as varints (both payments at 23:13 local), the
        // merchant's folded hash in 4 bytes, then what version 2 stores.
        let hours_at = 2 * (HEADER_BYTES - 24 * 4 - 4);
        assert_eq!(&v3[..6], "465003");
        assert_eq!(v3[6..hours_at], v2[6..hours_at]);
        let rest = &v3[hours_at..];
        assert_eq!(&rest[..48], format!("{}02", "00".repeat(23)));
        let merchant_at = 48 + 8 + 2 * CATEGORY_BYTES;
        assert_eq!(rest[48..merchant_at], v2[hours_at + 2 * 96..recent_at - 16]);
        assert_eq!(&rest[merchant_at..merchant_at + 8], V3_SHOP);
        assert_eq!(&rest[merchant_at + 8..], V2_RECENT);
        for bytes in [p.encode(1), p.encode(2), p.to_bytes()] {
            assert_eq!(Profile::from_bytes(&bytes).unwrap(), p);
        }
        // A version 2 profile as 0.5.0's development builds stored it, with the whole
        // 64-bit hash: read back, the merchant is still known.
        let mut stored = p.encode(2);
        let at = HEADER_BYTES + CATEGORY_BYTES;
        stored[at..at + 8].copy_from_slice(&V2_SHOP.to_le_bytes());
        let back = Profile::from_bytes(&stored).unwrap();
        assert!(back.knows_merchant("shop") && !back.knows_merchant("shops"));
        assert_eq!(back, p);
    }

    /// FNV-1a 64 of "shop", and it folded to 32 bits, little-endian (worked out with Python).
    const V2_SHOP: u64 = 0x46dc_5e18_e28e_2409;
    const V3_SHOP: &str = "117a52a4";

    /// (1 700 000 000 s, 42.17) and 90 s later (0.1 + 0.2), as version 1 and 2 store them.
    // Worked out independently with Python's struct module and a hand-written LEB128.
    const V1_RECENT: &str = "00401e18240a0600f6285c8fc2154540808a7b1d240a0600343333333333d33f";
    const V2_RECENT: &str = "00401e18240a0600f2418095f52a01343333333333d33f";

    #[test]
    fn invalid_payments_are_refused() {
        let mut p = Profile::new(0);
        assert!(p.update(&pay(0, f64::NAN, "m", "c")).is_err());
        let mut q = pay(0, 1.0, "m", "c");
        q.lat = Some(91.0);
        q.lon = Some(0.0);
        assert!(p.update(&q).is_err());
        assert_eq!(p.count, 0);
    }

    #[test]
    fn haversine_paris_london() {
        let d = haversine_km((48.8566, 2.3522), (51.5074, -0.1278));
        assert!((d - 343.5).abs() < 1.0, "{d}");
    }
}
