-- The main example: a generated sensor stream, filtered and projected, printed live.
-- Bounded (max_rows) so it ends by itself; no server needed.
CREATE SOURCE sensors (
  sensor_id BIGINT,
  ts        TIMESTAMP(3),
  temp      DOUBLE,
  site      VARCHAR,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  connector = 'generator',
  rows_per_second = 200,
  max_rows = 1000,
  seed = 42,
  fields.sensor_id.min = 1, fields.sensor_id.max = 20,
  fields.temp.min = 20, fields.temp.max = 110,
  fields.site.kind = 'values', fields.site.values = 'berlin,lisbon,oslo'
);

CREATE VIEW hot AS SELECT * FROM sensors WHERE temp > 100;

SELECT sensor_id, ts, upper(site) AS site, round(temp, 1) AS temp_c, round(temp * 9 / 5 + 32, 1) AS temp_f
FROM hot;
