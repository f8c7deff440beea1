-- DuckDB: the same query over the same file, read with the declared column types
SELECT id, upper(kind) AS kind, v * 2 AS v2, CASE WHEN v > 5 THEN 'high' ELSE 'low' END AS level
FROM read_json('events.jsonl', format = 'newline_delimited',
               columns = {'id': 'BIGINT', 'ts': 'TIMESTAMP', 'kind': 'VARCHAR', 'v': 'DOUBLE'})
WHERE v > 0
