"""Labels, Optuna tuning, evaluation and MLflow tracking; builds the runtime models that `serving` runs."""
