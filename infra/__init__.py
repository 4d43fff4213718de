"""Deployment definitions (Prefect work pool and deployments); see infra/README.md."""
