-- CSV in (empty fields are NULL, rows out of time order), declared sink columns + INSERT INTO
CREATE SOURCE readings (sensor VARCHAR, reading DOUBLE, unit VARCHAR, at TIMESTAMP)
  WITH (connector = 'file', path = 'readings.csv', format = 'csv');

CREATE SINK celsius (sensor VARCHAR, celsius DOUBLE, at_minute TIMESTAMP, band VARCHAR)
  WITH (connector = 'file', path = 'out/celsius.csv', format = 'csv');

INSERT INTO celsius
SELECT upper(sensor),
       round(CASE WHEN unit = 'F' THEN (reading - 32) * 5 / 9 ELSE reading END, 2),
       date_trunc('minute', at),
       CASE WHEN reading IS NULL THEN 'unknown'
            WHEN (CASE WHEN unit = 'F' THEN (reading - 32) * 5 / 9 ELSE reading END) > 25 THEN 'hot'
            ELSE 'ok' END
FROM readings
WHERE sensor IS NOT NULL;
