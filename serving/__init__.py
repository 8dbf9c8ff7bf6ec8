"""What runs at prediction time: runtime models, decisions, schemas, the BentoML service, batch scoring.

Never imports `training`: training builds these runtime objects and logs them to MLflow.
"""
