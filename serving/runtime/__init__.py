"""The models as they run everywhere (batch, Spark, online): feature encoding, LightGBM calls, the churn and
uplift runtimes, the catalogue and the incentive decision, and where MLflow models come from."""
