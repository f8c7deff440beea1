SELECT user_id, split_part(url, '/', 3) AS page, ts + INTERVAL '1' HOUR AS ts_cet
FROM read_json('inputs/clicks.jsonl', format = 'newline_delimited',
               columns = {'user_id': 'BIGINT', 'url': 'VARCHAR', 'ts': 'TIMESTAMP'})
WHERE url LIKE '/docs/%'
