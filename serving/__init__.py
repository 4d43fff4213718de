"""The inference service (FastAPI + uvicorn): batching, routing, hot swap, metrics, prediction log, feedback.
Imports gradus/ only (never Prefect, tasks or flows)."""
