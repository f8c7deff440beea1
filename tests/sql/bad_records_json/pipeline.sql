-- Records that do not fit the schema go to the dead-letter output; the sink gets the rest
CREATE SOURCE scores (id BIGINT NOT NULL, name VARCHAR, score DOUBLE)
  WITH (connector = 'file', path = 'scores.jsonl', format = 'json');

CREATE SINK good AS
  SELECT id, name, score * 10 AS points FROM scores
  WITH (connector = 'file', path = 'out/good.jsonl', format = 'json');
