-- pg_platform lake: a star schema for analysts, built in DuckDB from the current-state
-- zone of a sink that lands the reference payments schema.
--
-- Run it after views src_transaction, src_customer, src_merchant, src_location and
-- src_payment_method over the current zone exist: platform.lake_star_schema_sql(sink)
-- returns this script with those views first (`duckdb lake.duckdb < script.sql`).
--
-- Rules (tests/e2e/lake_star.sh asks the same questions of PostgreSQL and compares):
--   * tax_amount is the payment's own (the tax of the country where it took place);
--   * segment is the customer's own (Standard, Premium, Business);
--   * industry: the merchant's industry group (Retail: grocery, clothing, electronics,
--     pharmacy, jewelry; ...), its detailed industry kept in industry_detail;
--   * revenue and spending count successful payments; a fraud is a payment whose status is
--     chargeback (the dispute was lost);
--   * is_holiday: the fixed-date public holidays of France (1 Jan, 1 May, 8 May, 14 Jul,
--     15 Aug, 1 Nov, 11 Nov, 25 Dec); dates are UTC days.
SET TimeZone = 'UTC';

CREATE OR REPLACE TABLE dim_date AS
SELECT CAST(strftime(d, '%Y%m%d') AS INTEGER) AS date_key,
       CAST(d AS DATE) AS full_date,
       day(d) AS day, month(d) AS month, quarter(d) AS quarter, year(d) AS year,
       dayofweek(d) IN (0, 6) AS is_weekend,
       strftime(d, '%m-%d') IN ('01-01', '05-01', '05-08', '07-14', '08-15', '11-01', '11-11', '12-25') AS is_holiday
  FROM (SELECT unnest(generate_series(min(CAST(occurred_at AS DATE)), max(CAST(occurred_at AS DATE)), INTERVAL 1 DAY)) AS d
          FROM src_transaction);

CREATE OR REPLACE TABLE dim_customer AS
SELECT id AS customer_id, created_at,
       CASE segment WHEN 'premium' THEN 'Premium' WHEN 'business' THEN 'Business' ELSE 'Standard' END AS segment
  FROM src_customer;

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
SELECT CAST(strftime(occurred_at, '%Y%m%d') AS INTEGER) AS date_key, merchant_id, location_id,
       sum(amount) AS amount, sum(tax_amount) AS tax_amount
  FROM src_transaction
 WHERE status_id = 2
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
