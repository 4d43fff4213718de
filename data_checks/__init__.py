"""Data quality checks: Great Expectations suites built from params, and row-level quarantine."""
