SELECT order_id, length(Customer) AS name_len, Customer || '#' || CAST(order_id AS VARCHAR) AS label
FROM read_parquet('orders.parquet') WHERE order_id % 10 = 0
