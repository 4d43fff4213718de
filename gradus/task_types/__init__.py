"""Task types on one seam (docs/architecture.md, "Task types on one seam"): base.py is the interface every stage,
the gate, release, compression and ensembles call; one module per task type implements it; seam.py's
`task_type(name)` is the one place that maps a name to its module. Callers take the task type of the params
(`model.task`) or of a registered version (its manifest's `task`). A unit test fails on any module outside this
package and gradus/config that names a task type (tests/unit/test_task_types.py).
"""
