"""The incentive (uplift) model: the campaign table (data), learners, Optuna tuning, offline evaluation, reports,
and the training command (train)."""
