-- A labelled synthetic card-payment history for benches/bench_fraud.sh, made in SQL and
-- deterministic: every random draw is a hash of (row key, draw number), so the same sizes
-- give the same rows on any machine, whatever the plan.
--
-- psql variables: cards (number of cards), payments (legitimate payments in the history),
-- days (length of the history), live (payments after the history, for latency tests).
--
-- Cards have habits: a home (one of 20 cities), a usual amount, usual hours, three usual
-- categories with a few favourite merchants each, and some travel. About 0.5% of the rows
-- are fraud of three kinds (column kind):
--   card_testing       bursts of 6-11 tiny online payments a minute apart at a webshop;
--   account_takeover   1-3 payments far from home, mostly at an unusual hour, 5-20 times
--                      the usual amount, at a merchant the card never used;
--   compromised_merchant  three merchants charge cards they never served, online, at
--                      ordinary hours, 1.5-3.5 times the usual amount, during a few weeks.
-- Legitimate rows include travel and occasional big purchases, so that no single signal
-- separates the classes.
--
-- Tables made: payments (the history: id = rank by time, occurred_at unique, is_fraud,
-- kind) and payments_live (legitimate payments of the same cards just after the history).
\set ON_ERROR_STOP 1

-- bench_u(key, draw): a uniform number in (0, 1); bench_n: a standard normal one.
CREATE FUNCTION bench_u(k bigint, s int) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ((('x' || substr(md5(k::text || '/' || s::text), 1, 13))::bit(52)::int8)::float8 + 0.5) / 4503599627370496.0
$$;
CREATE FUNCTION bench_n(k bigint, s int) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sqrt(-2 * ln(bench_u(k, s))) * cos(2 * pi() * bench_u(k, s + 5000))
$$;

CREATE TABLE bench_city (id int PRIMARY KEY, lat float8, lon float8);
INSERT INTO bench_city VALUES
    (0, 48.86, 2.35), (1, 51.51, -0.13), (2, 52.52, 13.40), (3, 40.42, -3.70), (4, 41.90, 12.50),
    (5, 59.33, 18.07), (6, 40.71, -74.01), (7, 34.05, -118.24), (8, 41.88, -87.63), (9, 43.65, -79.38),
    (10, 35.68, 139.69), (11, 37.57, 126.98), (12, 1.35, 103.82), (13, -33.87, 151.21), (14, 19.43, -99.13),
    (15, -23.55, -46.63), (16, 30.04, 31.24), (17, 6.52, 3.38), (18, 28.61, 77.21), (19, 55.76, 37.62);

-- Categories with how much a payment there is worth relative to the card's usual amount.
CREATE TABLE bench_category (id int PRIMARY KEY, name text, factor float8);
INSERT INTO bench_category VALUES
    (0, 'grocery', 1.0), (1, 'restaurant', 0.8), (2, 'fuel', 1.2), (3, 'transport', 0.4),
    (4, 'pharmacy', 0.6), (5, 'clothing', 1.8), (6, 'electronics', 4.0), (7, 'travel', 6.0),
    (8, 'entertainment', 0.9), (9, 'utilities', 2.0), (10, 'digital_goods', 0.3), (11, 'jewelry', 8.0);

CREATE TABLE bench_card AS
SELECT c AS no,
       'card-' || lpad(c::text, 6, '0') AS card,
       floor(bench_u(c, 1) * 20)::int AS city,
       0.08 * bench_n(c, 2) AS dlat,
       0.08 * bench_n(c, 3) AS dlon,
       exp(2.3 + 1.8 * bench_u(c, 4)) AS usual,          -- 10 .. 60
       7 + 13 * bench_u(c, 5) AS habit,                   -- usual hour (UTC), 7 .. 20
       0.7 + 1.8 * bench_u(c, 6) AS spread,               -- hours
       floor(bench_u(c, 7) * 5)::int AS cat1,             -- an everyday category
       floor(bench_u(c, 8) * 10)::int AS cat2,
       floor(bench_u(c, 9) * 10)::int AS cat3
  FROM generate_series(1, :cards) c;
ALTER TABLE bench_card ADD PRIMARY KEY (no);

-- Legitimate payments, keys 1 .. payments (history) and payments+1 .. payments+live (live).
CREATE FUNCTION bench_legit(lo bigint, hi bigint, day0 float8, ndays float8)
RETURNS TABLE (k bigint, card text, amount numeric, ts timestamptz, merchant text, category text, lat float8, lon float8)
LANGUAGE sql STABLE AS $$
    WITH d AS (
        SELECT i, c.*,
               CASE WHEN bench_u(i, 14) < 0.55 THEN c.cat1
                    WHEN bench_u(i, 14) < 0.80 THEN c.cat2
                    WHEN bench_u(i, 14) < 0.94 THEN c.cat3
                    ELSE floor(bench_u(i, 15) * 12)::int END AS cat,
               c.habit + c.spread * bench_n(i, 12) AS hour
          FROM generate_series(lo, hi) i
          JOIN bench_card c ON c.no = 1 + floor(power(bench_u(i, 10), 1.4) * (SELECT count(*) FROM bench_card))::int
    )
    SELECT d.i, d.card,
           round(greatest(0.5, d.usual * g.factor * exp(0.45 * bench_n(d.i, 20))
                 * CASE WHEN bench_u(d.i, 24) < 0.01 THEN 3 + 7 * bench_u(d.i, 25) ELSE 1 END)::numeric, 2),
           timestamptz '2025-01-01 00:00:00+00'
             + ((day0 + floor(bench_u(d.i, 11) * ndays)) * 86400 + (d.hour - 24 * floor(d.hour / 24)) * 3600) * interval '1 second',
           g.name || '-' || CASE WHEN bench_u(d.i, 16) < 0.85
                                 THEN (d.no * 7 + d.cat * 13 + floor(bench_u(d.i, 17) * 4)::int) % 200
                                 ELSE floor(bench_u(d.i, 18) * 200)::int END,
           g.name,
           CASE WHEN g.name = 'digital_goods' THEN NULL
                WHEN bench_u(d.i, 22) < 0.95 THEN h.lat + d.dlat + 0.03 * bench_n(d.i, 26)
                ELSE t.lat + 0.05 * bench_n(d.i, 27) END,
           CASE WHEN g.name = 'digital_goods' THEN NULL
                WHEN bench_u(d.i, 22) < 0.95 THEN h.lon + d.dlon + 0.03 * bench_n(d.i, 28)
                ELSE t.lon + 0.05 * bench_n(d.i, 29) END
      FROM d
      JOIN bench_category g ON g.id = d.cat
      JOIN bench_city h ON h.id = d.city
      JOIN bench_city t ON t.id = floor(bench_u(d.i, 23) * 20)::int
$$;

CREATE TABLE bench_stage AS
SELECT 'legitimate'::text AS kind, k, card, amount, ts, merchant, category, lat, lon
  FROM bench_legit(1, :payments, 0, :days);

-- Fraud sizes: about 0.5% of all rows, 35% card testing, 35% takeover, 30% compromised
-- merchants (at least a few of each on tiny histories).
SELECT greatest(2, round(:payments / 199.0 * 0.35 / 8.5))::int AS bursts,
       greatest(3, round(:payments / 199.0 * 0.35 / 2.0))::int AS takeovers,
       greatest(4, round(:payments / 199.0 * 0.30))::int AS charges \gset

-- Card testing: bursts b of 6-11 payments of 0.50-3.00, 20-70 s apart, at one of ten webshops.
INSERT INTO bench_stage
SELECT 'card_testing', b * 100 + j, c.card,
       round((0.5 + 2.5 * bench_u(b * 100 + j, 105))::numeric, 2),
       timestamptz '2025-01-01 00:00:00+00' + (bench_u(b, 102) * :days * 86400
           + j * 45 + 25 * bench_u(b * 100 + j, 104)) * interval '1 second',
       'digital_goods-' || (190 + b % 10), 'digital_goods', NULL, NULL
  FROM generate_series(1, :bursts) b
  CROSS JOIN LATERAL generate_series(0, 5 + floor(bench_u(b, 103) * 6)::int) j
  JOIN bench_card c ON c.no = 1 + floor(bench_u(b, 101) * :cards)::int;

-- Account takeover: events a of 1-3 payments far from home, 70% at an unusual hour.
INSERT INTO bench_stage
SELECT 'account_takeover', a * 100 + j, c.card,
       round((c.usual * (5 + 15 * bench_u(a * 100 + j, 205)))::numeric, 2),
       timestamptz '2025-01-01 00:00:00+00' + (floor(bench_u(a, 202) * :days) * 86400
           + (CASE WHEN bench_u(a, 203) < 0.7 THEN c.habit + 9 + 6 * bench_u(a, 206) ELSE c.habit END)::numeric % 24 * 3600
           + j * (300 + 1500 * bench_u(a * 100 + j, 207))) * interval '1 second',
       g.name || '-' || floor(bench_u(a * 100 + j, 208) * 200)::int, g.name,
       t.lat + 0.05 * bench_n(a * 100 + j, 210), t.lon + 0.05 * bench_n(a * 100 + j, 211)
  FROM generate_series(1, :takeovers) a
  CROSS JOIN LATERAL generate_series(0, floor(bench_u(a, 204) * 3)::int) j
  JOIN bench_card c ON c.no = 1 + floor(bench_u(a, 201) * :cards)::int
  JOIN bench_category g ON g.id = (ARRAY[6, 7, 11])[1 + floor(bench_u(a * 100 + j, 209) * 3)::int]
  JOIN bench_city t ON t.id = (c.city + 5 + floor(bench_u(a, 212) * 10)::int) % 20;

-- Compromised merchants: three merchants, each charging cards during its own window
-- (a fifth of the history), online, at the card's usual hours.
INSERT INTO bench_stage
SELECT 'compromised_merchant', r, c.card,
       round((c.usual * g.factor * (1.5 + 2 * bench_u(r, 305)))::numeric, 2),
       timestamptz '2025-01-01 00:00:00+00' + (floor((0.1 + 0.3 * (r % 3) + 0.2 * bench_u(r, 302)) * :days) * 86400
           + (c.habit + c.spread * bench_n(r, 303) + 48)::numeric % 24 * 3600) * interval '1 second',
       (ARRAY['clothing-7', 'restaurant-11', 'electronics-3'])[1 + r % 3], g.name, NULL, NULL
  FROM generate_series(1, :charges) r
  JOIN bench_card c ON c.no = 1 + floor(bench_u(r, 301) * :cards)::int
  JOIN bench_category g ON g.id = (ARRAY[5, 1, 6])[1 + r % 3];

-- The history, ranked by time; timestamps made unique (whole seconds + the rank in
-- microseconds, which keeps the order) so that a time split is exact.
CREATE TABLE payments (
    id          bigint PRIMARY KEY,
    card        text NOT NULL,
    amount      numeric(12,2) NOT NULL,
    occurred_at timestamptz NOT NULL UNIQUE,
    merchant    text NOT NULL,
    category    text NOT NULL,
    lat         float8,
    lon         float8,
    is_fraud    boolean NOT NULL,
    kind        text NOT NULL
);
INSERT INTO payments
SELECT rn, card, amount, date_trunc('second', ts) + rn * interval '1 microsecond',
       merchant, category, lat, lon, kind <> 'legitimate', kind
  FROM (SELECT s.*, row_number() OVER (ORDER BY ts, kind, k) AS rn FROM bench_stage s) s
 ORDER BY rn;

-- Live payments just after the history (two days), for latency and the service.
CREATE TABLE payments_live AS
SELECT row_number() OVER (ORDER BY ts, k) AS id, card, amount::numeric(12,2) AS amount,
       date_trunc('second', ts) + (row_number() OVER (ORDER BY ts, k)) * interval '1 microsecond' AS occurred_at,
       merchant, category, lat, lon
  FROM bench_legit(:payments + 1, :payments + :live, :days, 2);
ALTER TABLE payments_live ADD PRIMARY KEY (id);

DROP TABLE bench_stage;
ANALYZE payments;
ANALYZE payments_live;
