-- Sensor anomaly detection with an ONNX model called inline: SELECT predict(features) FROM sensors
--
--   python make_model.py && sqlstream run pipeline.sql       (or ./run.sh)

-- 60,000 readings from 20 sensors over 10 minutes of simulated event time, up to 3 s late.
CREATE SOURCE sensors (
  sensor_id BIGINT,
  ts        TIMESTAMP,
  temp      DOUBLE,
  features  FLOAT[4],              -- fixed-size list: feeds the model's [N, 4] input
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  connector = 'generator', rows_per_second = 0, max_rows = 60000, seed = 7,
  clock = 'simulated', clock_start = '2024-06-01T08:00:00',
  fields.sensor_id.min = 1, fields.sensor_id.max = 20,
  fields.temp.min = 15, fields.temp.max = 95,
  fields.ts.step = '10ms', fields.ts.max_delay = '3s'
);

-- an IsolationForest: outputs label (-1 anomalous, 1 normal) and scores → a STRUCT
CREATE FUNCTION predict AS MODEL 'anomaly.onnx';

-- the mission query, literally (each row: {"predict": {"label": 1, "scores": 0.07}})
CREATE SINK scores AS
  SELECT predict(features) FROM sensors
  WITH (connector = 'file', path = 'out/scores.jsonl', format = 'json');

-- struct fields by name; the model runs once per micro-batch for WHERE and SELECT
CREATE SINK anomalies AS
  SELECT sensor_id, ts, fahrenheit(temp) AS temp_f, predict(features).scores AS score,
         severity(predict(features).scores) AS severity
  FROM sensors
  WHERE predict(features).label = -1
  WITH (connector = 'file', path = 'out/anomalies.jsonl', format = 'json');

-- sensors with repeated anomalies, per minute, final when the watermark passes
CREATE SINK flaky_sensors AS
  SELECT window_start, window_end, sensor_id, count(*) AS anomalies, min(predict(features).scores) AS worst
  FROM TUMBLE(sensors, ts, INTERVAL '1' MINUTE)
  WHERE predict(features).label = -1
  GROUP BY window_start, window_end, sensor_id
  HAVING count(*) >= 3
  WITH (connector = 'file', path = 'out/flaky_sensors.jsonl', format = 'json');
