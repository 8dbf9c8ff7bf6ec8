"""The churn model: labelled point-in-time snapshots (data), Optuna tuning, reports, and the training command (train)."""
