"""params.yaml as typed, frozen models, and the code that reads and edits it. Rooms: `pipeline` (the sections
the DVC stages read, `StageParams`), `operations` (serving, release, drift, tune, runs), `params` (`Params`,
the whole file, and `load_params`), `loading` (reading, duplicate keys, overrides, error wording),
`editing` (a run workspace's params written back faithfully). A stage depends on `pipeline` and `loading`
only, so editing the serving settings' code reruns no stage."""
