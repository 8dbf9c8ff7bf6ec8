"""Whole customer bases: churn scores and incentive decisions written in chunks, atomically."""
