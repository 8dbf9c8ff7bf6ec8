"""MLflow pyfunc entry points ("models from code") of the churn and uplift models."""
