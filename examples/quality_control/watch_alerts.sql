-- The alerts of pipeline_nats.sql as they come back from NATS, printed in this terminal:
-- sqlstream run watch_alerts.sql
CREATE SOURCE alerts (line VARCHAR, part VARCHAR, seq BIGINT, score REAL, _subject VARCHAR)
  WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', subject = 'qc.alerts.>');

SELECT _subject AS subject, part, seq, score FROM alerts;
