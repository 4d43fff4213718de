"""The model registry: immutable, checksummed versions with lineage, and aliases changed only by compare-and-swap.

Layout under the registry root (a local folder or s3://bucket/prefix), every object written once:

    versions/<id>/files/<path>   the model folder (safetensors weights, config, tokenizer, label map)
    versions/<id>/manifest.json  sha256 of every file + lineage + metrics + gate report; written LAST,
                                 create-only: a version exists exactly when its manifest does
    aliases/<generation>.json    the whole alias map after change number <generation> (12 digits)
    audit/<time>-<nonce>.json    one event per change or refused change (append-only)

Why by hand: MLflow's registry needs a tracking server and has neither compare-and-swap aliases nor
checksum-verified loads; DVC's model registry (GTO) keeps aliases as git tags, which a service cannot
change atomically. Both primitives here (write-once objects, create-if-absent) exist on a filesystem
(os.link) and on S3 (conditional PUT, If-None-Match: *).

Rooms: `store` (the object stores, shared with backup), `integrity` (ids, digests, signatures, what a
version's files may be), `audit` (the append-only event log and its incremental reader), `aliases` (the
alias map changed by compare-and-swap), `versions` (register, verify, fetch, resolve: the `Registry`).
Loading a servable model from a version lives with modeling (`gradus.modeling.load_version`); drift
monitor records live with monitoring (`gradus.monitoring.records`).
"""
