-- The second example: a JSON-lines file in, a Parquet file out.
-- Paid orders, converted to EUR and bucketed by hour; the two malformed records in
-- data/orders.jsonl go to orders_to_parquet.dead_letter.jsonl next to this file.
CREATE SOURCE orders (
  order_id  BIGINT NOT NULL,
  customer  VARCHAR,
  country   VARCHAR,
  amount    DOUBLE,
  status    VARCHAR,
  placed_at TIMESTAMP(3)
) WITH (connector = 'file', path = 'data/orders.jsonl', format = 'json');

CREATE SINK paid_orders AS
  SELECT order_id,
         split_part(customer, '@', 2)                  AS customer_domain,
         country,
         round(amount * 0.92, 2)                       AS amount_eur,
         CASE WHEN amount >= 250 THEN 'large'
              WHEN amount >= 50  THEN 'medium'
              ELSE 'small' END                         AS size,
         date_trunc('hour', placed_at)                 AS hour
  FROM orders
  WHERE status = 'paid'
  WITH (connector = 'file', path = 'out/paid_orders.parquet', format = 'parquet');
