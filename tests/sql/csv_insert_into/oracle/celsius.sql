SELECT upper(sensor) AS sensor,
       round(CASE WHEN unit = 'F' THEN (reading - 32) * 5 / 9 ELSE reading END, 2) AS celsius,
       date_trunc('minute', "at") AS at_minute,
       CASE WHEN reading IS NULL THEN 'unknown'
            WHEN (CASE WHEN unit = 'F' THEN (reading - 32) * 5 / 9 ELSE reading END) > 25 THEN 'hot'
            ELSE 'ok' END AS band
FROM read_csv('readings.csv', header = true,
              columns = {'sensor': 'VARCHAR', 'reading': 'DOUBLE', 'unit': 'VARCHAR', 'at': 'TIMESTAMP'})
WHERE sensor IS NOT NULL
