-- The analysts' questions, on the star schema of star_schema.duckdb.sql.

-- 1. Monthly tax amount for the Retail industry in France.
SELECT d.year, d.month, sum(f.tax_amount) AS tax_amount
  FROM fact_revenue f
  JOIN dim_date d USING (date_key)
  JOIN dim_merchant m USING (merchant_id)
  JOIN dim_location l USING (location_id)
 WHERE m.industry = 'Retail' AND l.country = 'FR'
 GROUP BY d.year, d.month ORDER BY d.year, d.month;

-- 2. Daily number of credit-card payment frauds at small merchants.
SELECT d.full_date, sum(f.fraud_count) AS frauds
  FROM fact_fraud_analysis f
  JOIN dim_date d USING (date_key)
  JOIN dim_payment_method p USING (payment_method_id)
  JOIN dim_merchant m USING (merchant_id)
 WHERE p.name = 'credit card' AND m.size = 'small'
 GROUP BY d.full_date ORDER BY d.full_date;

-- 3. Yearly total spent by Premium customers in France.
SELECT d.year, sum(f.total_spent) AS total_spent
  FROM fact_customer_segmentation f
  JOIN dim_date d USING (date_key)
  JOIN dim_customer c USING (customer_id)
  JOIN dim_location l USING (location_id)
 WHERE c.segment = 'Premium' AND l.country = 'FR'
 GROUP BY d.year ORDER BY d.year;
