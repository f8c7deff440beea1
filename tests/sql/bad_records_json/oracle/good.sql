-- DuckDB decides independently which lines fit (id BIGINT NOT NULL, name VARCHAR, score DOUBLE):
-- valid JSON objects whose id is an integer and whose score, when present, a number
WITH lines AS (
  SELECT line FROM read_csv('scores.jsonl', header = false, columns = {'line': 'VARCHAR'},
                            delim = '\t', quote = '', escape = '')
), fitting AS (
  SELECT line FROM lines
  WHERE json_valid(line) AND json_type(line) = 'OBJECT'
    AND json_type(line, '$.id') IN ('BIGINT', 'UBIGINT')
    AND coalesce(json_type(line, '$.score'), 'NULL') IN ('DOUBLE', 'BIGINT', 'UBIGINT', 'NULL')
    AND coalesce(json_type(line, '$.name'), 'NULL') IN ('VARCHAR', 'NULL')
)
SELECT CAST(line ->> 'id' AS BIGINT) AS id, line ->> 'name' AS name, CAST(line ->> 'score' AS DOUBLE) * 10 AS points
FROM fitting
