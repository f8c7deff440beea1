SELECT order_id, Customer AS customer, amount * qty AS total, placed
FROM read_parquet('orders.parquet') WHERE qty >= 3
