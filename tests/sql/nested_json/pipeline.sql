-- Nested JSON: a fixed-size float array, a struct and a variable list
CREATE SOURCE items (id BIGINT, f FLOAT[3], meta STRUCT<name VARCHAR, weight DOUBLE>, tags VARCHAR[])
  WITH (connector = 'file', path = 'items.jsonl', format = 'json');

CREATE SINK flat AS
  SELECT id, f[1] AS f1, f[3] AS f3, (meta).name AS name, (meta).weight * 2 AS double_weight,
         array_length(tags) AS n_tags, tags[1] AS first_tag
  FROM items WHERE (meta).weight > 1
  WITH (connector = 'file', path = 'out/flat.parquet', format = 'parquet');
