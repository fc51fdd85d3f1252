"""Deployment helpers: prefect.yaml support (make deploy), the serve script and the local PostgreSQL."""
