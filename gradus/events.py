"""Names of the Prefect events gradus emits (the flows emit them; infra's automations and deployment triggers
react to them). Plain strings: the core library does not import Prefect."""

DRIFT_RETRAIN = "gradus.drift.retrain"          # the drift monitor started a retrain; payload: reason, flow_run
RELEASE_ROLLED_BACK = "gradus.release.rolled-back"  # a release step failed; payload: version, reasons
MODEL_CANDIDATE = "gradus.model.candidate"      # a gated candidate was registered; payload: version, registry
