"""Gradual release of a gated version: the live-traffic analysis each step is judged on (`analysis`), and the
controller's plain logic — the plan of steps, where a release stands, moving the aliases, waiting for the
service to follow, judging a step, promoting or withdrawing (`controller`). The Prefect flow
(`flows/release.py`) only orchestrates: task runs, pause for approval, artifacts and events."""
