"""Side-by-side performance harnesses; each writes JSON into benchmarks/results/."""
