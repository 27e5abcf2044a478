-- pg_platform lake: a star schema for analysts, built in DuckDB from the current-state
-- zone of a sink that lands the reference payments schema.
--
-- Run it after views src_transaction, src_customer, src_merchant, src_location and
-- src_payment_method over the current zone exist: platform.lake_star_schema_sql(sink)
-- returns this script with those views first (`duckdb lake.duckdb < script.sql`).
--
-- What the reference schema does not store is derived here, and the same rules answer the
-- same questions in PostgreSQL (tests/e2e/lake_star.sh checks they agree):
--   * tax_amount: the VAT on a payment (amounts are net), at the standard rate of the
--     country where it took place (rates as of 2026; 0 where no VAT applies);
--   * industry: the merchant's industry group (Retail: grocery, clothing, electronics,
--     pharmacy, jewelry; ...), its detailed industry kept in industry_detail;
--   * segment: Premium for customers holding an American Express card, Standard otherwise;
--   * revenue and spending count successful payments; a fraud is a payment whose status is
--     chargeback (the dispute was lost);
--   * is_holiday: the fixed-date public holidays of France (1 Jan, 1 May, 8 May, 14 Jul,
--     15 Aug, 1 Nov, 11 Nov, 25 Dec); dates are UTC days.
SET TimeZone = 'UTC';

CREATE OR REPLACE TABLE vat_rate (country VARCHAR PRIMARY KEY, rate DECIMAL(5,4));
INSERT INTO vat_rate VALUES
  ('AU', 0.10), ('BR', 0.17), ('CA', 0.05), ('CH', 0.081), ('DE', 0.19), ('ES', 0.21),
  ('FR', 0.20), ('GB', 0.20), ('IE', 0.23), ('IN', 0.18), ('IT', 0.22), ('JP', 0.10),
  ('MX', 0.16), ('NL', 0.21), ('PL', 0.23), ('SE', 0.25), ('SG', 0.09), ('US', 0.00),
  ('ZA', 0.15);

CREATE OR REPLACE TABLE dim_date AS
SELECT CAST(strftime(d, '%Y%m%d') AS INTEGER) AS date_key,
       CAST(d AS DATE) AS full_date,
       day(d) AS day, month(d) AS month, quarter(d) AS quarter, year(d) AS year,
       dayofweek(d) IN (0, 6) AS is_weekend,
       strftime(d, '%m-%d') IN ('01-01', '05-01', '05-08', '07-14', '08-15', '11-01', '11-11', '12-25') AS is_holiday
  FROM (SELECT unnest(generate_series(min(CAST(occurred_at AS DATE)), max(CAST(occurred_at AS DATE)), INTERVAL 1 DAY)) AS d
          FROM src_transaction);

CREATE OR REPLACE TABLE dim_customer AS
SELECT c.id AS customer_id, c.created_at,
       CASE WHEN EXISTS (SELECT 1 FROM src_payment_method p
                          WHERE p.customer_id = c.id AND p.kind = 'card' AND p.brand = 'amex')
            THEN 'Premium' ELSE 'Standard' END AS segment
  FROM src_customer c;

CREATE OR REPLACE TABLE dim_merchant AS
SELECT id AS merchant_id, name,
       CASE WHEN industry IN ('grocery', 'clothing', 'electronics', 'pharmacy', 'jewelry') THEN 'Retail'
            WHEN industry IN ('restaurants', 'fast_food') THEN 'Food and drink'
            WHEN industry IN ('travel_airline', 'hotels', 'ride_hailing') THEN 'Travel'
            WHEN industry IN ('digital_goods', 'subscriptions') THEN 'Digital'
            WHEN industry = 'fuel' THEN 'Fuel'
            WHEN industry = 'gambling' THEN 'Gambling'
            ELSE 'Financial services' END AS industry,
       industry AS industry_detail, size, country
  FROM src_merchant;

CREATE OR REPLACE TABLE dim_location AS
SELECT id AS location_id, country, city FROM src_location;

CREATE OR REPLACE TABLE dim_payment_method AS
SELECT id AS payment_method_id,
       CASE kind WHEN 'card' THEN 'credit card' WHEN 'wallet' THEN 'digital wallet' ELSE 'bank transfer' END AS name,
       brand
  FROM src_payment_method;

CREATE OR REPLACE TABLE fact_revenue AS
SELECT CAST(strftime(t.occurred_at, '%Y%m%d') AS INTEGER) AS date_key, t.merchant_id, t.location_id,
       sum(t.amount) AS amount,
       sum(round(t.amount * coalesce(v.rate, 0), 2)) AS tax_amount
  FROM src_transaction t
  JOIN src_location l ON l.id = t.location_id
  LEFT JOIN vat_rate v ON v.country = l.country
 WHERE t.status_id = 2
 GROUP BY ALL;

CREATE OR REPLACE TABLE fact_fraud_analysis AS
SELECT CAST(strftime(occurred_at, '%Y%m%d') AS INTEGER) AS date_key, payment_method_id, merchant_id,
       count(*) AS fraud_count
  FROM src_transaction
 WHERE status_id = 7
 GROUP BY ALL;

CREATE OR REPLACE TABLE fact_customer_segmentation AS
SELECT CAST(strftime(occurred_at, '%Y%m%d') AS INTEGER) AS date_key, customer_id, location_id,
       count(*) AS transaction_count, sum(amount) AS total_spent
  FROM src_transaction
 WHERE status_id = 2
 GROUP BY ALL;
