-- Quality control on a production line: every photo in frames/ goes through a scratch
-- detector (an ONNX model taking the JPEG bytes); verdicts go to out/verdicts.jsonl.
-- Photos that are not images end up in pipeline.dead_letter.jsonl (reason 'decode').

CREATE SOURCE camera (path VARCHAR, content BYTEA)
  WITH (connector = 'file', path = 'frames', format = 'binary');

CREATE FUNCTION inspect AS MODEL 'defects.onnx'
  WITH (input = 'image', size = '64x64', channels = 'gray', labels = 'ok,scratch');

CREATE SINK verdicts AS
  SELECT path, inspect(content).label AS label, inspect(content).score AS score FROM camera
  WITH (connector = 'file', path = 'out/verdicts.jsonl', format = 'json');
