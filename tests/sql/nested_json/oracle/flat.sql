SELECT id, f[1] AS f1, f[3] AS f3, meta.name AS name, meta.weight * 2 AS double_weight,
       array_length(tags) AS n_tags, tags[1] AS first_tag
FROM read_json('items.jsonl', format = 'newline_delimited',
               columns = {'id': 'BIGINT', 'f': 'FLOAT[3]', 'meta': 'STRUCT(name VARCHAR, weight DOUBLE)', 'tags': 'VARCHAR[]'})
WHERE meta.weight > 1
