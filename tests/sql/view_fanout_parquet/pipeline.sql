-- Parquet in (column names matched case-insensitively), a view, two sinks and a bare
-- SELECT sharing one read of the source
CREATE SOURCE orders (order_id BIGINT, customer VARCHAR, amount DECIMAL(10, 2), qty INT, placed TIMESTAMP(3))
  WITH (connector = 'file', path = 'orders.parquet', format = 'parquet');

CREATE VIEW big_orders AS
  SELECT order_id, customer, amount * qty AS total, placed FROM orders WHERE qty >= 3;

CREATE SINK big FROM big_orders WITH (connector = 'file', path = 'out/big.jsonl', format = 'json');

CREATE SINK by_customer AS
  SELECT lower(customer) AS customer, total, extract(hour FROM placed) AS hour
  FROM big_orders WHERE total > 100
  WITH (connector = 'stdout');

SELECT order_id, length(customer) AS name_len, customer || '#' || CAST(order_id AS VARCHAR) AS label
FROM orders WHERE order_id % 10 = 0;
