#!/usr/bin/env bash
# End-to-end demo on simulated data: simulate → features → segments (→ train → register → package).
set -euo pipefail
cd "$(dirname "$0")/.."
WB=".venv/bin/winback"
OUT="${DEMO_DIR:-demo}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}"

echo "== simulate 5,000 customers"
$WB simulate --customers 5000 --seed 7 --output-dir "$OUT/data" --mkdir

echo "== point-in-time features as of the end of the history, with lifecycle and value segments"
$WB features build --transactions "$OUT/data/transactions.parquet" --profiles "$OUT/data/customers.parquet" \
    --as-of 2025-12-31 --output "$OUT/features.parquet"
$WB segment summary --features "$OUT/features.parquet"

echo "== churn: tune LightGBM on 3 snapshots, track in MLflow, register winback-churn@champion"
$WB train churn --transactions "$OUT/data/transactions.parquet" --profiles "$OUT/data/customers.parquet" \
    --cutoff 2025-12-31 --horizon-days 180 --snapshots 3 --trials 8 --max-rounds 500 --seed 7 \
    --register-as winback-churn --json-out "$OUT/churn.json"

echo "== batch churn scores from the champion"
$WB score --model models:/winback-churn@champion --transactions "$OUT/data/transactions.parquet" \
    --profiles "$OUT/data/customers.parquet" --as-of 2025-12-31 --output "$OUT/churn_scores.parquet"

echo "== uplift: which incentive to send (Optuna-tuned, tracked in MLflow, registered as winback-uplift@champion)"
$WB train uplift --campaign "$OUT/data/campaign.parquet" --treatment-col incentive --control no_contact \
    --outcome converted --transactions "$OUT/data/transactions.parquet" --profiles "$OUT/data/customers.parquet" \
    --as-of 2025-12-31 --catalog "$OUT/data/incentives.yaml" --trials 10 --seed 7 \
    --register-as winback-uplift --json-out "$OUT/uplift.json"

echo "== batch decisions from the champion, capped at a budget of 200"
$WB recommend --model models:/winback-uplift@champion --input "$OUT/features.parquet" \
    --budget 200 --output "$OUT/recommendations.csv"

echo "== package both champions into the BentoML model store"
$WB package
echo "Serve them with:  $WB serve --port 3000 --features $OUT/features.parquet"
