-- MQTT in and out: machine temperatures from 'factory/<line>/temp' (JSON), ten-second
-- peaks per line published to 'factory/<line>/alerts'. Needs a broker on 127.0.0.1:1883
-- (e.g. mosquitto); try it with:
--   mosquitto_pub -t factory/l1/temp -q 1 -m '{"machine": 3, "temp": 95.5, "ts": "2026-01-01T00:00:01"}'
CREATE SOURCE readings (
  machine BIGINT,
  temp    DOUBLE,
  ts      TIMESTAMP,
  _topic  VARCHAR,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  connector = 'mqtt',
  url = 'mqtt://127.0.0.1:1883',
  topic = 'factory/+/temp',
  qos = 1,
  client_id = 'sqlstream-mqtt-example',
  clean_session = false
);

CREATE VIEW by_line AS
  SELECT split_part(_topic, '/', 2) AS line, machine, temp, ts FROM readings;

CREATE SINK alerts AS
  SELECT window_start, window_end, line, max(temp) AS peak, count(*) AS readings
  FROM TUMBLE(by_line, ts, INTERVAL '10' SECOND)
  GROUP BY window_start, window_end, line
  HAVING max(temp) > 90
WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:1883', topic = 'factory/{line}/alerts', qos = 1);
