SELECT lower(Customer) AS customer, amount * qty AS total, extract(hour FROM placed) AS hour
FROM read_parquet('orders.parquet') WHERE qty >= 3 AND amount * qty > 100
