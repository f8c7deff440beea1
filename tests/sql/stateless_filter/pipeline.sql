CREATE SOURCE events (id BIGINT, ts TIMESTAMP, kind VARCHAR, v DOUBLE)
  WITH (connector = 'file', path = 'events.jsonl', format = 'json');
CREATE SINK positives AS
  SELECT id, upper(kind) AS kind, v * 2 AS v2, CASE WHEN v > 5 THEN 'high' ELSE 'low' END AS level
  FROM events WHERE v > 0
  WITH (connector = 'file', path = 'out/positives.jsonl', format = 'json');
