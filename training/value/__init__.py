"""Customer value: what a customer will spend over a horizon (issue 16, in progress)."""
