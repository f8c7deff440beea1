#!/usr/bin/env sh
# Make the photos and the model, run the pipeline, report accuracy against the truth.
set -e
cd "$(dirname "$0")"
python make_data.py
python make_model.py
sqlstream run pipeline.sql
python check_accuracy.py
