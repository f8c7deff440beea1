-- Quality control on a live line: photos arrive on JetStream (one raw JPEG per message,
-- on camera.<line>.<part>), go through the same scratch detector as pipeline.sql, and
-- every scratched part is announced as a JSON alert on qc.alerts.<line>.
-- A payload that is not an image ends up in pipeline_nats.dead_letter.jsonl (reason 'decode').
-- Start nats-server -js, run `python publish.py`, then `sqlstream run pipeline_nats.sql` (README.md).

CREATE SOURCE camera (image BYTEA, _subject VARCHAR, _stream_seq BIGINT)
  WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', stream = 'CAMERA', subject = 'camera.>',
        durable = 'inspector', format = 'raw');

CREATE FUNCTION inspect AS MODEL 'defects.onnx'
  WITH (input = 'image', size = '64x64', channels = 'gray', labels = 'ok,scratch');

CREATE SINK alerts AS
  SELECT split_part(_subject, '.', 2) AS line, split_part(_subject, '.', 3) AS part, _stream_seq AS seq,
         inspect(image).score AS score
  FROM camera
  WHERE inspect(image).label = 'scratch'
  WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', subject = 'qc.alerts.{line}');
