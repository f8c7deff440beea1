#!/usr/bin/env sh
# Train the model, then run the pipeline. Results: out/suspicious.jsonl, out/alerts_per_merchant.jsonl
set -e
cd "$(dirname "$0")"
python make_model.py
sqlstream run pipeline.sql
echo "first alerts per merchant:"
head -n 5 out/alerts_per_merchant.jsonl
