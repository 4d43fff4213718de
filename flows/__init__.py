"""Prefect flows: orchestration only; every ML step lives in tasks/ and gradus/."""
