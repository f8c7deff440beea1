-- Sensor readings from NATS -> 5-second windows per sensor -> anomaly model -> alerts on NATS.
-- Start it with `sqlstream run pipeline.sql` while `sqlstream produce` publishes readings (see README.md).

CREATE SOURCE readings (
  sensor_id BIGINT,
  ts        TIMESTAMP,
  temp      DOUBLE,
  humidity  DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', subject = 'sensors.readings');

-- models/anomaly.onnx is written by build_model.py
CREATE FUNCTION anomaly AS MODEL 'models/anomaly.onnx';

CREATE VIEW sensor_windows AS
  SELECT window_start, window_end, sensor_id,
         count(*) AS readings, avg(temp) AS avg_temp, max(temp) AS max_temp, avg(humidity) AS avg_humidity
  FROM TUMBLE(readings, ts, INTERVAL '5' SECOND)
  GROUP BY window_start, window_end, sensor_id;

-- one message per alert, on a subject per sensor
CREATE SINK alerts AS
  SELECT window_end, sensor_id, readings, round(avg_temp, 2) AS avg_temp, round(max_temp, 2) AS max_temp,
         round(anomaly(avg_temp, max_temp, avg_humidity, readings), 3) AS score
  FROM sensor_windows
  WHERE anomaly(avg_temp, max_temp, avg_humidity, readings) > 0.8
  WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', subject = 'alerts.{sensor_id}');

-- the alerts as they come back from NATS, printed in this terminal
CREATE SOURCE alerts_feed (
  window_end TIMESTAMP, sensor_id BIGINT, readings BIGINT, avg_temp DOUBLE, max_temp DOUBLE, score DOUBLE,
  _subject VARCHAR
) WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', subject = 'alerts.>');

SELECT _subject AS subject, window_end, readings, avg_temp, max_temp, score FROM alerts_feed;
