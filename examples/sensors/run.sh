#!/usr/bin/env sh
# Train the model, then run the pipeline. Results in out/: scores, anomalies, flaky_sensors
set -e
cd "$(dirname "$0")"
python make_model.py
sqlstream run pipeline.sql
echo "sensors with repeated anomalies:"
head -n 5 out/flaky_sensors.jsonl
