#!/usr/bin/env bash
# End-to-end demo on simulated data: simulate → features → segments → train → register → campaign loop → package.
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

echo "== monitoring: today's customers against the churn model's reference (exit 3 would mean drift)"
$WB monitor --model models:/winback-churn@champion --features "$OUT/features.parquet" \
    --json-out "$OUT/monitor.json" --html-out "$OUT/monitor.html"

# --decision-confidence 0.5: on 1,500 validation customers no incentive can be shown to pay at the default 95 %
# (the model would send nothing); the demo decides on the point estimates of what each incentive's sends return
echo "== uplift: which incentive to send (Optuna-tuned, tracked in MLflow, registered as winback-uplift@champion)"
$WB train uplift --campaign "$OUT/data/campaign.parquet" --treatment-col incentive --control no_contact \
    --outcome converted --transactions "$OUT/data/transactions.parquet" --profiles "$OUT/data/customers.parquet" \
    --as-of 2025-12-31 --catalog "$OUT/data/incentives.yaml" --trials 10 --seed 7 --decision-confidence 0.5 \
    --register-as winback-uplift --json-out "$OUT/uplift.json"

echo "== batch decisions from the champion, capped at a budget of 200"
$WB recommend --model models:/winback-uplift@champion --input "$OUT/features.parquet" \
    --budget 200 --output "$OUT/recommendations.csv"

echo "== campaign loop, round 2: plan with a 10 % global holdout and 5 % exploration, simulated answers, evaluation"
# the simulator has one moment: campaign 2 goes to the same customers on the same day, answered with the same
# true effects as the randomised campaign 1 the first model learned from
$WB recommend --model models:/winback-uplift@champion --input "$OUT/features.parquet" \
    --output "$OUT/recommendations_all.parquet"
$WB campaign plan --recommendations "$OUT/recommendations_all.parquet" --campaign-id winback-2 \
    --campaign-date 2026-01-01 --control-share 0.10 --explore-share 0.05 --seed 7 \
    --catalog "$OUT/data/incentives.yaml" --output "$OUT/plan2.parquet"
$WB simulate respond --plan "$OUT/plan2.parquet" --truth-dir "$OUT/data" --seed 7 --output "$OUT/outcomes2.parquet"
$WB campaign evaluate --plan "$OUT/plan2.parquet" --outcomes "$OUT/outcomes2.parquet" \
    --catalog "$OUT/data/incentives.yaml" --training-out "$OUT/campaign2.parquet" --json-out "$OUT/campaign2.json"

echo "== retrain uplift on campaigns 1 + 2 (logged propensities); it becomes champion only if it is better"
$WB train uplift --campaign "$OUT/data/campaign.parquet" --campaign "$OUT/campaign2.parquet" \
    --treatment-col incentive --control no_contact --outcome converted \
    --transactions "$OUT/data/transactions.parquet" --profiles "$OUT/data/customers.parquet" \
    --as-of 2025-12-31 --catalog "$OUT/data/incentives.yaml" --trials 10 --seed 7 --decision-confidence 0.5 \
    --register-as winback-uplift --json-out "$OUT/uplift2.json"

echo "== retention strategy report: scores with their top-3 churn reasons, the budget-200 plan with every arm's net"
echo "   value (Parquet: it records the models and the catalogue), and what campaign 2 really returned"
$WB score --model models:/winback-churn@champion --transactions "$OUT/data/transactions.parquet" \
    --profiles "$OUT/data/customers.parquet" --as-of 2025-12-31 --reasons 3 --output "$OUT/churn_scores_reasons.parquet"
$WB recommend --model models:/winback-uplift@champion --input "$OUT/features.parquet" \
    --budget 200 --net-values --output "$OUT/recommendations_budget.parquet"
$WB report --scores "$OUT/churn_scores_reasons.parquet" --recommendations "$OUT/recommendations_budget.parquet" \
    --campaign-eval "$OUT/campaign2.json" --html-out "$OUT/report.html" --json-out "$OUT/report.json"
echo "Retention strategy report: $OUT/report.html"

echo "== package both champions into the BentoML model store"
$WB package
echo "Serve them with:  $WB serve --port 3000 --features $OUT/features.parquet"
