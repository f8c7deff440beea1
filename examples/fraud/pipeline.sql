-- Card-fraud scoring: an ONNX model (make_model.py) as a SQL function, a Python UDF
-- from udfs/, suspicious transactions to a file and a windowed alert count per merchant.
--
--   python make_model.py && sqlstream run pipeline.sql       (or ./run.sh)

-- 200,000 generated transactions over ~33 minutes of simulated event time, up to 1 s
-- out of order. features = [amount unusualness, hour, distance from home, merchant risk].
CREATE SOURCE tx (
  tx_id    BIGINT,
  merchant VARCHAR,
  amount   DOUBLE,
  ts       TIMESTAMP,
  features FLOAT[4],
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  connector = 'generator', rows_per_second = 0, max_rows = 200000, seed = 42,
  clock = 'simulated', clock_start = '2024-03-01T12:00:00',
  fields.tx_id.kind = 'sequence',
  fields.merchant.kind = 'values', fields.merchant.values = 'grocer,fuel,electronics,travel,casino,pharmacy',
  fields.amount.min = 1, fields.amount.max = 2500,
  fields.ts.step = '10ms', fields.ts.max_delay = '1s'
);

-- fraud.onnx outputs label, probabilities and fraud_probability: pick the last
CREATE FUNCTION fraud_score AS MODEL 'fraud.onnx' WITH (output = 'fraud_probability');

-- computed once per micro-batch, reused by WHERE and SELECT
CREATE SINK suspicious AS
  SELECT tx_id, merchant, amount, fraud_score(features) AS p, risk_band(fraud_score(features)) AS band
  FROM tx
  WHERE fraud_score(features) > 0.9
  WITH (connector = 'file', path = 'out/suspicious.jsonl', format = 'json');

-- one final row per merchant and minute, when the watermark passes the window's end
CREATE SINK alerts_per_merchant AS
  SELECT window_start, window_end, merchant, count(*) AS alerts, max(fraud_score(features)) AS worst
  FROM TUMBLE(tx, ts, INTERVAL '1' MINUTE)
  WHERE fraud_score(features) > 0.9
  GROUP BY window_start, window_end, merchant
  WITH (connector = 'file', path = 'out/alerts_per_merchant.jsonl', format = 'json');
