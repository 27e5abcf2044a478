//! Deterministic payments data: every row is a pure function of (seed, table, row id).
//!
//! Each row draws from its own PRNG seeded by mixing the seed, a per-table tag and the row
//! id, so a row never depends on how many rows came before it or how the load was chunked,
//! and the rows that reference it (a transaction's customer, that customer's home location,
//! a merchant's currency) can recompute what they need without reading the table.
//!
//! The `generate_*_rows` functions only return rows; `platform.generate_payments` inserts them.

// pgrx spells a set-returning function's columns in its return type.
#![allow(clippy::type_complexity)]

use super::data::*;
use pgrx::prelude::*;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use rand_pcg::Pcg64Mcg;

const TAG_LOCATION: u64 = 1;
const TAG_CUSTOMER: u64 = 2;
const TAG_ADDRESS: u64 = 3;
const TAG_MERCHANT: u64 = 4;
const TAG_PAYMENT_METHOD: u64 = 5;
const TAG_DEVICE: u64 = 6;
const TAG_TRANSACTION: u64 = 7;
const TAG_HOME_LOCATION: u64 = 8;
const TAG_MERCHANT_CITY: u64 = 9;
const TAG_CUSTOMER_HABIT: u64 = 10;
const TAG_FRAUD_BURST: u64 = 11;
const TAG_FRAUD_ROW: u64 = 12;
const TAG_FRAUD_MERCHANT: u64 = 13;

const USECS_PER_DAY: i64 = 86_400_000_000;

/// SplitMix64's finaliser: spreads (seed, tag, id) over the whole seed space.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn row_rng(seed: i64, tag: u64, id: i64) -> Pcg64Mcg {
    Pcg64Mcg::seed_from_u64(mix(mix(seed as u64 ^ (tag << 56)) ^ id as u64))
}

fn pick<'a, T>(rng: &mut Pcg64Mcg, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Index of a weighted choice; `weight` reads an item's relative weight.
fn pick_weighted<T>(rng: &mut Pcg64Mcg, items: &[T], weight: impl Fn(&T) -> u32) -> usize {
    let total: u32 = items.iter().map(&weight).sum();
    let mut x = rng.random_range(0..total.max(1));
    for (i, item) in items.iter().enumerate() {
        let w = weight(item);
        if x < w {
            return i;
        }
        x -= w;
    }
    items.len() - 1
}

fn timestamptz(micros_since_2000: i64) -> TimestampWithTimeZone {
    // Always finite and in range: generated instants stay within a few decades of 2000.
    TimestampWithTimeZone::try_from(micros_since_2000)
        .unwrap_or(TimestampWithTimeZone::positive_infinity())
}

fn date(days_since_2000: i32) -> Option<Date> {
    Date::try_from(days_since_2000).ok()
}

/// Number of location rows for a load: several per city, more for larger customer bases.
pub fn location_count(customers: i64) -> i64 {
    let cities = CITIES.len() as i64;
    let wanted = (customers / 25).max(cities * 4);
    (wanted + cities - 1) / cities * cities
}

/// Location `l` (1-based) is in city `(l - 1) % CITIES.len()`.
fn city_of_location(location_id: i64) -> usize {
    ((location_id - 1) % CITIES.len() as i64) as usize
}

/// The /24 network a geo-IP lookup maps to location `l`; unique per location.
fn location_octets(location_id: i64) -> (i64, i64, i64) {
    (
        11 + (location_id >> 16),
        (location_id >> 8) & 255,
        location_id & 255,
    )
}

/// A customer's home location, from its own stream so anyone can recompute it.
fn home_location(seed: i64, customer_id: i64, locations: i64) -> i64 {
    let mut rng = row_rng(seed, TAG_HOME_LOCATION, customer_id);
    let city = pick_weighted(&mut rng, CITIES, |c| c.5) as i64;
    let per_city = locations / CITIES.len() as i64;
    city + 1 + CITIES.len() as i64 * rng.random_range(0..per_city.max(1))
}

/// A merchant's city, from its own stream so anyone can recompute it.
fn merchant_city(seed: i64, merchant_id: i64) -> usize {
    let mut rng = row_rng(seed, TAG_MERCHANT_CITY, merchant_id);
    pick_weighted(&mut rng, CITIES, |c| c.5)
}

/// Reference locations: cities with a little spread and a distinct IP network each.
#[pg_extern(immutable, parallel_safe)]
fn generate_location_rows(
    count: i64,
    seed: i64,
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(country, String),
        name!(city, String),
        name!(latitude, f64),
        name!(longitude, f64),
        name!(ip_network, String),
    ),
> {
    TableIterator::new((1..=count.max(0)).map(move |id| {
        let mut rng = row_rng(seed, TAG_LOCATION, id);
        let (city, country, lat, lon, _, _) = CITIES[city_of_location(id)];
        let (a, b, c) = location_octets(id);
        (
            id,
            country.to_string(),
            city.to_string(),
            (lat + rng.random_range(-0.15..0.15)).clamp(-90.0, 90.0),
            (lon + rng.random_range(-0.15..0.15)).clamp(-180.0, 180.0),
            format!("{a}.{b}.{c}.0/24"),
        )
    }))
}

/// Customers: names, contact details, a home location and an account age.
#[pg_extern(immutable, parallel_safe)]
fn generate_customer_rows(
    count: i64,
    seed: i64,
    locations: i64,
    start_at: TimestampWithTimeZone,
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(external_id, pgrx::Uuid),
        name!(full_name, String),
        name!(email, String),
        name!(phone, Option<String>),
        name!(date_of_birth, Option<Date>),
        name!(home_location_id, i64),
        name!(created_at, TimestampWithTimeZone),
        name!(segment, String),
    ),
> {
    let start: i64 = start_at.into_inner();
    TableIterator::new((1..=count.max(0)).map(move |id| {
        let home = home_location(seed, id, locations);
        let mut rng = row_rng(seed, TAG_CUSTOMER, id);
        let first = *pick(&mut rng, FIRST_NAMES);
        let last = *pick(&mut rng, LAST_NAMES);
        let domain = *pick(&mut rng, EMAIL_DOMAINS);
        let mut uuid: [u8; 16] = rng.random();
        uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4
        uuid[8] = (uuid[8] & 0x3f) | 0x80; // RFC 4122 variant
        let phone = (rng.random::<f64>() < 0.9).then(|| {
            format!(
                "+{}{:010}",
                rng.random_range(1..99),
                rng.random_range(0..10_000_000_000u64)
            )
        });
        let dob = date(rng.random_range(-18_000..2_200)); // born 1950..2006
        let created =
            start - rng.random_range(0..1_100) * USECS_PER_DAY - rng.random_range(0..USECS_PER_DAY);
        // Drawn last, so the other columns are those of earlier versions.
        let segment = SEGMENTS[pick_weighted(&mut rng, SEGMENTS, |s| s.1)].0;
        (
            id,
            pgrx::Uuid::from_bytes(uuid),
            format!("{first} {last}"),
            format!(
                "{}.{}.{id}@{domain}",
                first.to_lowercase(),
                last.to_lowercase()
            ),
            phone,
            dob,
            home,
            timestamptz(created),
            segment.to_string(),
        )
    }))
}

/// One billing address per customer (id = customer id), in the customer's home city.
#[pg_extern(immutable, parallel_safe)]
fn generate_billing_address_rows(
    count: i64,
    seed: i64,
    locations: i64,
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(customer_id, i64),
        name!(line1, String),
        name!(line2, Option<String>),
        name!(city, String),
        name!(postal_code, String),
        name!(country, String),
        name!(is_default, bool),
    ),
> {
    TableIterator::new((1..=count.max(0)).map(move |id| {
        let (city, country, ..) = CITIES[city_of_location(home_location(seed, id, locations))];
        let mut rng = row_rng(seed, TAG_ADDRESS, id);
        let street = *pick(&mut rng, STREETS);
        let line2 =
            (rng.random::<f64>() < 0.2).then(|| format!("Apt {}", rng.random_range(1..400)));
        (
            id,
            id,
            format!("{} {street}", rng.random_range(1..2_000)),
            line2,
            city.to_string(),
            format!("{:05}", rng.random_range(1_000..99_999)),
            country.to_string(),
            true,
        )
    }))
}

/// Merchants: industry with its MCC, size, home country and settlement currency.
#[pg_extern(immutable, parallel_safe)]
fn generate_merchant_rows(
    count: i64,
    seed: i64,
    start_at: TimestampWithTimeZone,
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(name, String),
        name!(industry, String),
        name!(mcc, String),
        name!(size, String),
        name!(country, String),
        name!(currency, String),
        name!(created_at, TimestampWithTimeZone),
    ),
> {
    let start: i64 = start_at.into_inner();
    TableIterator::new((1..=count.max(0)).map(move |id| {
        let city = merchant_city(seed, id);
        let mut rng = row_rng(seed, TAG_MERCHANT, id);
        let (industry, mcc, _) = INDUSTRIES[pick_weighted(&mut rng, INDUSTRIES, |i| i.2)];
        let size = MERCHANT_SIZES[pick_weighted(&mut rng, MERCHANT_SIZES, |s| s.1)].0;
        let name = format!(
            "{} {} #{id}",
            pick(&mut rng, MERCHANT_WORDS),
            pick(&mut rng, MERCHANT_NOUNS)
        );
        let created = start - rng.random_range(30..3_000) * USECS_PER_DAY;
        let (_, country, _, _, currency, _) = CITIES[city];
        (
            id,
            name,
            industry.to_string(),
            mcc.to_string(),
            size.to_string(),
            country.to_string(),
            CURRENCIES[currency].0.to_string(),
            timestamptz(created),
        )
    }))
}

/// Two payment methods per customer: ids `2c-1` (always a card) and `2c`.
#[pg_extern(immutable, parallel_safe)]
fn generate_payment_method_rows(
    customers: i64,
    seed: i64,
    start_at: TimestampWithTimeZone,
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(customer_id, i64),
        name!(billing_address_id, i64),
        name!(kind, String),
        name!(brand, String),
        name!(last4, Option<String>),
        name!(expires_on, Option<Date>),
        name!(created_at, TimestampWithTimeZone),
    ),
> {
    let start: i64 = start_at.into_inner();
    let start_days = (start / USECS_PER_DAY) as i32;
    TableIterator::new((1..=customers.max(0) * 2).map(move |id| {
        let customer = (id + 1) / 2;
        let mut rng = row_rng(seed, TAG_PAYMENT_METHOD, id);
        let x: f64 = rng.random();
        let kind = if id % 2 == 1 || x < 0.6 {
            "card"
        } else if x < 0.85 {
            "wallet"
        } else {
            "bank_account"
        };
        let (brand, last4, expires) = match kind {
            "card" => (
                CARD_BRANDS[pick_weighted(&mut rng, CARD_BRANDS, |b| b.1)].0,
                Some(format!("{:04}", rng.random_range(0..10_000))),
                date(start_days + rng.random_range(30..1_800)),
            ),
            "wallet" => (*pick(&mut rng, WALLETS), None, None),
            _ => (
                *pick(&mut rng, BANKS),
                Some(format!("{:04}", rng.random_range(0..10_000))),
                None,
            ),
        };
        (
            id,
            customer,
            customer,
            kind.to_string(),
            brand.to_string(),
            last4,
            expires,
            timestamptz(start - rng.random_range(1..900) * USECS_PER_DAY),
        )
    }))
}

/// Two devices per customer: ids `2c-1` (a phone) and `2c` (a desktop or tablet).
#[pg_extern(immutable, parallel_safe)]
fn generate_device_rows(
    customers: i64,
    seed: i64,
    start_at: TimestampWithTimeZone,
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(customer_id, i64),
        name!(device_type, String),
        name!(os, String),
        name!(fingerprint, String),
        name!(first_seen, TimestampWithTimeZone),
    ),
> {
    let start: i64 = start_at.into_inner();
    TableIterator::new((1..=customers.max(0) * 2).map(move |id| {
        let mut rng = row_rng(seed, TAG_DEVICE, id);
        let (device_type, os) = if id % 2 == 1 {
            (
                "mobile",
                MOBILE_OS[pick_weighted(&mut rng, MOBILE_OS, |o| o.1)].0,
            )
        } else {
            let t = if rng.random::<f64>() < 0.7 {
                "desktop"
            } else {
                "tablet"
            };
            (
                t,
                DESKTOP_OS[pick_weighted(&mut rng, DESKTOP_OS, |o| o.1)].0,
            )
        };
        (
            id,
            (id + 1) / 2,
            device_type.to_string(),
            os.to_string(),
            format!("{:016x}{id:x}", rng.random::<u64>()),
            timestamptz(start - rng.random_range(1..700) * USECS_PER_DAY),
        )
    }))
}

/// Parameters shared by every chunk of one transaction load.
pub struct TransactionPlan {
    pub seed: i64,
    pub total: i64,
    pub customers: i64,
    pub merchants: i64,
    pub locations: i64,
    pub start: i64,
    pub window: i64,
    pub fraud: FraudPlan,
}

/// The kinds of fraud the generator plants, with the column value that labels them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fraud {
    /// Bursts of BURST tiny online payments, seconds apart, at a webshop, from a device
    /// the card never used.
    CardTesting,
    /// A stranger's device, far from home, mostly at night, 5-20 times the card's usual
    /// amount, at a merchant selling what resells (electronics, travel, jewelry...).
    AccountTakeover,
    /// One of three merchants charging cards of all kinds of customers, 1.5-3.5 times
    /// their usual amount, during its own fifth of the period.
    CompromisedMerchant,
}

impl Fraud {
    fn label(self) -> &'static str {
        match self {
            Self::CardTesting => "card_testing",
            Self::AccountTakeover => "account_takeover",
            Self::CompromisedMerchant => "compromised_merchant",
        }
    }
}

/// Consecutive transaction ids that form one card-testing burst.
const BURST: i64 = 8;
/// Shares of the fraud rate: card testing, account takeover, compromised merchants.
const FRAUD_SHARES: (f64, f64, f64) = (0.35, 0.35, 0.30);
/// Hours (UTC) at which most takeovers happen, and the share of takeovers in them.
const NIGHT_HOURS: i64 = 6;
const NIGHT_SHARE: f64 = 0.7;
/// Each compromised merchant's window, as a share of the period.
const COMPROMISE_SPAN: f64 = 0.2;

/// Where planted fraud happens: merchants by what they sell, the compromised merchants
/// and their windows. Recomputed by every chunk from the seed alone.
pub struct FraudPlan {
    rate: f64,
    webshops: Vec<i64>,
    resellable: Vec<i64>,
    compromised: Vec<(i64, i64, i64)>,
}

/// A merchant's industry, from the same stream `generate_merchant_rows` draws it from.
fn merchant_industry(seed: i64, merchant_id: i64) -> &'static str {
    let mut rng = row_rng(seed, TAG_MERCHANT, merchant_id);
    INDUSTRIES[pick_weighted(&mut rng, INDUSTRIES, |i| i.2)].0
}

impl FraudPlan {
    pub fn new(seed: i64, merchants: i64, start: i64, window: i64, rate: f64) -> Self {
        let of = |kinds: &[&str]| -> Vec<i64> {
            let found: Vec<i64> = (1..=merchants)
                .filter(|&m| kinds.contains(&merchant_industry(seed, m)))
                .collect();
            // Tiny loads may lack the industry: any merchant then.
            if found.is_empty() {
                (1..=merchants.min(3)).collect()
            } else {
                found
            }
        };
        let webshops = of(&["digital_goods", "subscriptions"]);
        let resellable = of(&[
            "electronics",
            "travel_airline",
            "hotels",
            "jewelry",
            "gambling",
        ]);
        let retail = of(&["clothing", "restaurants", "electronics", "fast_food"]);
        let mut rng = row_rng(seed, TAG_FRAUD_MERCHANT, 0);
        let compromised = (0..3)
            .map(|k| {
                let merchant = *pick(&mut rng, &retail);
                let from = 0.1 + 0.3 * k as f64 + 0.1 * rng.random::<f64>();
                let begin = start + (from * window as f64) as i64;
                (
                    merchant,
                    begin,
                    begin + (COMPROMISE_SPAN * window as f64) as i64,
                )
            })
            .collect();
        Self {
            rate: rate.clamp(0.0, 1.0),
            webshops,
            resellable,
            compromised,
        }
    }

    /// Whether transaction `id` of a load of `total`, at `occurred`, is planted fraud, and
    /// which. Card testing is decided per burst of ids, the rest per id.
    fn kind(&self, seed: i64, id: i64, occurred: i64) -> Option<Fraud> {
        if self.rate <= 0.0 {
            return None;
        }
        let burst = row_rng(seed, TAG_FRAUD_BURST, (id - 1) / BURST).random::<f64>();
        if burst < self.rate * FRAUD_SHARES.0 {
            return Some(Fraud::CardTesting);
        }
        let mut rng = row_rng(seed, TAG_FRAUD_ROW, id);
        let hour = occurred.rem_euclid(USECS_PER_DAY) / 3_600_000_000;
        let night = NIGHT_HOURS as f64 / 24.0;
        let takeover = if hour < NIGHT_HOURS {
            self.rate * FRAUD_SHARES.1 * NIGHT_SHARE / night
        } else {
            self.rate * FRAUD_SHARES.1 * (1.0 - NIGHT_SHARE) / (1.0 - night)
        };
        if rng.random::<f64>() < takeover {
            return Some(Fraud::AccountTakeover);
        }
        let covered = COMPROMISE_SPAN * self.compromised.len() as f64;
        let in_window = self
            .compromised
            .iter()
            .any(|&(_, from, to)| (from..to).contains(&occurred));
        (in_window && rng.random::<f64>() < self.rate * FRAUD_SHARES.2 / covered)
            .then_some(Fraud::CompromisedMerchant)
    }
}

/// Transactions `first_id ..= first_id + count - 1` of a load of `total`, spread evenly
/// over `days` from `start_at` (so ids grow with time, as in a real ledger). About
/// `fraud_rate` of them are planted fraud, labelled in `fraud_label` (see `Fraud`).
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe)]
fn generate_transaction_rows(
    first_id: i64,
    count: i64,
    total: i64,
    seed: i64,
    customers: i64,
    merchants: i64,
    start_at: TimestampWithTimeZone,
    days: i32,
    fraud_rate: default!(f64, 0.005),
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(occurred_at, TimestampWithTimeZone),
        name!(customer_id, i64),
        name!(merchant_id, i64),
        name!(payment_method_id, i64),
        name!(device_id, Option<i64>),
        name!(location_id, i64),
        name!(ip_address, String),
        name!(amount, String),
        name!(currency, String),
        name!(status_id, i16),
        name!(tax_amount, String),
        name!(fraud_label, Option<String>),
    ),
> {
    let start = start_at.into_inner();
    let window = i64::from(days.max(1)) * USECS_PER_DAY;
    let merchants = merchants.max(1);
    let plan = TransactionPlan {
        seed,
        total: total.max(1),
        customers: customers.max(1),
        merchants,
        locations: location_count(customers),
        start,
        window,
        fraud: FraudPlan::new(seed, merchants, start, window, fraud_rate),
    };
    let last = first_id.saturating_add(count.max(0));
    TableIterator::new((first_id..last).map(move |id| transaction_row(&plan, id)))
}

type TransactionRow = (
    i64,
    TimestampWithTimeZone,
    i64,
    i64,
    i64,
    Option<i64>,
    i64,
    String,
    String,
    String,
    i16,
    String,
    Option<String>,
);

/// Minor units as a decimal string with `digits` decimals.
fn decimal_text(minor: i64, digits: i16) -> String {
    if digits == 0 {
        return minor.to_string();
    }
    let s = 10i64.pow(digits as u32);
    format!(
        "{}.{:0width$}",
        minor / s,
        minor % s,
        width = digits as usize
    )
}

/// A customer's usual payment in US dollars (log-normal around 33), from its own stream:
/// amounts are relative to it, so "9x this card's average" means something.
fn usual_amount(seed: i64, customer_id: i64) -> f64 {
    let mut rng = row_rng(seed, TAG_CUSTOMER_HABIT, customer_id);
    LogNormal::new(3.5, 0.6)
        .map(|d| d.sample(&mut rng))
        .unwrap_or(33.0)
}

/// A device of some other customer: one the card never used.
fn strangers_device(rng: &mut Pcg64Mcg, customers: i64, customer: i64) -> Option<i64> {
    (customers > 1).then(|| {
        let other = 1 + (customer + rng.random_range(0..customers - 1)) % customers;
        2 * other - 1 + rng.random_range(0..2)
    })
}

fn transaction_row(p: &TransactionPlan, id: i64) -> TransactionRow {
    let mut rng = row_rng(p.seed, TAG_TRANSACTION, id);
    let slot = p.window / p.total;
    let base = |i: i64| p.start + ((i - 1) as i128 * p.window as i128 / p.total as i128) as i64;
    let mut occurred = base(id) + rng.random_range(0..slot.max(1));
    // Skewed activity: a few customers and merchants carry much of the volume.
    let customer = 1 + ((p.customers as f64) * rng.random::<f64>().powf(2.0)) as i64;
    let merchant = 1 + ((p.merchants as f64) * rng.random::<f64>().powf(3.0)) as i64;
    let mut customer = customer.min(p.customers);
    let mut merchant = merchant.min(p.merchants);
    let mut method = 2 * customer - 1 + i64::from(rng.random::<f64>() >= 0.8);
    // Card-present purchases (10%) carry no customer device.
    let mut device = (rng.random::<f64>() >= 0.1)
        .then(|| 2 * customer - 1 + i64::from(rng.random::<f64>() < 0.35));
    let mut location = if rng.random::<f64>() < 0.9 {
        home_location(p.seed, customer, p.locations)
    } else {
        rng.random_range(1..=p.locations)
    };
    let spread: f64 = LogNormal::new(0.0, 0.8)
        .map(|d| d.sample(&mut rng))
        .unwrap_or(1.0);
    let mut status = STATUS_WEIGHTS[pick_weighted(&mut rng, STATUS_WEIGHTS, |s| s.1)].0;
    let ip_host = rng.random_range(1..255);
    let fraud = p.fraud.kind(p.seed, id, occurred);
    let mut usd = usual_amount(p.seed, customer) * spread;
    // Planted fraud draws from its own streams, so legitimate rows stay as they are.
    let mut f = row_rng(p.seed, TAG_FRAUD_ROW, -id);
    match fraud {
        None => {}
        Some(Fraud::CardTesting) => {
            // One victim, one webshop, one stranger's device per burst, payments seconds
            // apart from the burst's first slot (never past the next burst's first).
            let first = (id - 1) / BURST * BURST + 1;
            let mut b = row_rng(p.seed, TAG_FRAUD_BURST, -first);
            customer = b.random_range(1..=p.customers);
            merchant = *pick(&mut b, &p.fraud.webshops);
            device = strangers_device(&mut b, p.customers, customer);
            location = b.random_range(1..=p.locations);
            let step = (45_000_000i64).min(slot.max(1));
            occurred = base(first) + (id - first) * step + f.random_range(0..(step / 2).max(1));
            usd = 0.5 + 2.5 * f.random::<f64>();
            status = if f.random::<f64>() < 0.6 { 3 } else { 2 };
        }
        Some(Fraud::AccountTakeover) => {
            device = strangers_device(&mut f, p.customers, customer);
            let home = home_location(p.seed, customer, p.locations);
            location = f.random_range(1..=p.locations);
            if city_of_location(location) == city_of_location(home) {
                location = location % p.locations + 1;
            }
            merchant = *pick(&mut f, &p.fraud.resellable);
            usd = usual_amount(p.seed, customer) * (5.0 + 15.0 * f.random::<f64>());
            status = fraud_status(&mut f, 0.5, 0.2);
        }
        Some(Fraud::CompromisedMerchant) => {
            let &(m, _, _) = p
                .fraud
                .compromised
                .iter()
                .find(|&&(_, from, to)| (from..to).contains(&occurred))
                .unwrap_or(&p.fraud.compromised[0]);
            merchant = m;
            customer = f.random_range(1..=p.customers);
            device = None;
            let city = merchant_city(p.seed, merchant) as i64;
            let per_city = (p.locations / CITIES.len() as i64).max(1);
            location = city + 1 + CITIES.len() as i64 * f.random_range(0..per_city);
            usd = usual_amount(p.seed, customer) * (1.5 + 2.0 * f.random::<f64>());
            status = fraud_status(&mut f, 0.4, 0.2);
        }
    }
    if fraud.is_some() {
        method = 2 * customer - 1;
    }
    let (a, b, c) = location_octets(location);
    let currency = CURRENCIES[CITIES[merchant_city(p.seed, merchant)].4];
    let scale = 10f64.powi(i32::from(currency.2));
    let minor = ((usd.min(250_000.0) * currency.3 * scale).round() as i64).max(1);
    let amount = decimal_text(minor, currency.2);
    // The tax of the country where the payment takes place, on the (net) amount, half up.
    let country = CITIES[city_of_location(location)].1;
    let rate = TAX_RATES
        .iter()
        .find(|t| t.0 == country)
        .map_or(0, |t| i64::from(t.1));
    let tax = decimal_text((minor * rate + 5_000) / 10_000, currency.2);
    (
        id,
        timestamptz(occurred),
        customer,
        merchant,
        method,
        device,
        location,
        format!("{a}.{b}.{c}.{ip_host}"),
        amount,
        currency.0.to_string(),
        status,
        tax,
        fraud.map(|k| k.label().to_string()),
    )
}

/// The status of a planted fraud: chargeback (the dispute was lost), disputed, or still
/// successful (not found out yet).
fn fraud_status(rng: &mut Pcg64Mcg, chargeback: f64, disputed: f64) -> i16 {
    let x = rng.random::<f64>();
    if x < chargeback {
        7
    } else if x < chargeback + disputed {
        5
    } else {
        2
    }
}
