"""Crash, concurrency, tamper and pickle tests of the model registry, on both storage backends."""
