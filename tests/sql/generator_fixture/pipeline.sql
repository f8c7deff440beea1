-- A generator source, replaced in the test by the fixture inputs/clicks.jsonl (event
-- times jittered out of order: a stateless query passes every row through)
CREATE SOURCE clicks (user_id BIGINT, url VARCHAR, ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
  WITH (connector = 'generator', rows_per_second = 100, fields.user_id.min = 1, fields.user_id.max = 50,
        fields.url.kind = 'values', fields.url.values = '/docs/intro,/pricing');

CREATE SINK docs AS
  SELECT user_id, split_part(url, '/', 3) AS page, ts + INTERVAL '1' HOUR AS ts_cet
  FROM clicks WHERE url LIKE '/docs/%'
  WITH (connector = 'stdout');
