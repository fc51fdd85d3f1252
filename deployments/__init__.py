"""Deployment helpers: prefect.yaml support, the serve script and the model server."""
