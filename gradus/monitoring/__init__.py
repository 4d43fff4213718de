"""Watching production data: drift computation against the champion's training data (`drift`), and the
monitor's records in the registry store — one claim per batch that started a retrain, and each verdict
(`records`)."""
