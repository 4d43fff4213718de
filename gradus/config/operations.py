"""The sections of params.yaml that no pipeline stage reads: the drift monitor, the service and its
prediction log, gradual release, the hyperparameter search and run workspaces."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from gradus.config.pipeline import TableFormat, TrainConfig, _Section

# label_cardinality and label_scores are label sets' (model.task multi_label), entity_count and span_score entities'
# (token_classification); a champion of another type skips them.
DriftSignal = Literal["text_length", "word_count", "non_letter_share", "oov_share", "predicted_label",
                      "confidence", "embeddings", "label_cardinality", "label_scores", "entity_count", "span_score"]


class DriftConfig(_Section):
    """The drift monitor (gradus/monitoring/drift.py): which signals, how sure, and when a retrain may start."""

    text_column: str = "text"
    label_column: str | None = "label"   # a labeled batch is added to the retrain's data; None: unlabeled
    format: TableFormat = "auto"
    endpoint_url: str | None = None       # for s3:// batches on an S3-compatible server
    signals: tuple[DriftSignal, ...] = ("text_length", "word_count", "non_letter_share", "oov_share",
                                        "predicted_label", "confidence", "embeddings", "label_cardinality",
                                        "label_scores", "entity_count", "span_score")
    min_drifted_signals: int = Field(1, ge=1)   # retrain only when at least this many signals drift
    numerical_method: str = "ks"                # Evidently stat test for numerical signals (ks: p-value)
    numerical_threshold: float = Field(0.001, gt=0)
    label_p_value: float = Field(0.01, gt=0, lt=1)  # permutation test on the predicted-label distribution
    label_permutations: int = Field(1000, ge=100)
    embeddings_threshold: float = Field(0.55, gt=0.5, lt=1)  # ROC AUC of a reference-vs-current classifier
    max_model_rows: int = Field(1000, ge=100)   # current rows scored with the champion (a seeded sample)
    reference_model_rows: int = Field(5000, ge=100)  # reference rows scored (more: a steadier baseline)
    min_samples: int = Field(500, ge=1)         # a smaller batch never triggers a retrain
    cooldown_hours: float = Field(24.0, ge=0)   # no retrain sooner than this after the last one
    seed: int = 0
    training_deployment: str = "training_pipeline/training-pipeline"
    # A labeled batch that triggered a retrain joins the training data for good (a file in paths.catalogue),
    # so later runs keep learning from it; false: only the retrain it triggered trains on it.
    keep_labeled_batches: bool = True


PREDICTION_LOG_COLUMNS = ("time", "request_id", "text", "version", "alias", "predicted_label", "confidence",
                          "latency_ms")


class PredictionLogConfig(_Section):
    """Every answered text, in rolling Parquet/JSONL files: the drift monitor's and the release's input."""

    uri: str = "data/predictions"           # a folder (relative to the project) or s3://bucket/prefix
    format: Literal["parquet", "jsonl"] = "parquet"
    flush_rows: int = Field(1000, ge=1)     # a file is written when this many rows wait ...
    flush_seconds: float = Field(10.0, gt=0)  # ... or when the oldest waited this long
    buffer_rows: int = Field(50_000, ge=1)  # rows held in memory at most; beyond, new rows are dropped (counted)
    mask_pii: bool = False                  # mask e-mail, card and phone numbers (validate.pii.kinds) in texts

    def files(self) -> str:
        """What a reader passes to read every file of the log: a glob of a folder, or the s3:// prefix."""
        return self.uri if self.uri.startswith("s3://") else f"{self.uri.rstrip('/')}/*.{self.format}"


class EnsembleMember(_Section):
    """One model of a served ensemble: a registered version (id or prefix) or an alias, and its vote weight."""

    model: str
    weight: float = Field(1.0, gt=0)


class ServingConfig(_Section):
    """The inference service (serving/): limits, batching, hot swap, logs."""

    host: str = "127.0.0.1"                 # loopback by default: expose it on purpose (0.0.0.0 in a container)
    port: int = Field(8000, ge=1, le=65535)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # auto: on a CPU the fastest of torch and the version's variants that passed parity, timed at load
    backend: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    precision: Literal["auto", "fp32"] = "auto"  # torch backend: auto = bf16 autocast where it pays; fp32 never
    # Two or more members: the champion route answers with their weighted average probabilities (soft voting)
    ensemble: tuple[EnsembleMember, ...] = ()
    lanes: int = Field(0, ge=0)             # forward passes at once per served model; 0: 1 on a GPU, 2 on a CPU
    threads: int = Field(0, ge=0)           # torch threads per lane; 0: the CPU cores shared among the lanes
    max_batch_size: int = Field(32, ge=1)   # texts per forward pass
    max_wait_ms: float = Field(5.0, ge=0)   # how long a batch waits for its lane's share of the queued texts
    queue_size: int = Field(256, ge=1)      # requests waiting per model; a full queue answers 503 at once
    request_timeout_s: float = Field(10.0, gt=0)  # an answer later than this is a 504
    max_texts: int = Field(64, ge=1)        # texts per request
    max_chars: int = Field(2000, ge=1)      # characters per text
    max_body_bytes: int = Field(1 << 20, ge=1024)
    top_k: int = Field(3, ge=1)
    poll_interval_s: float = Field(5.0, gt=0)  # how often the registry's aliases are checked for a change
    admin_token_env: str = "GRADUS_ADMIN_TOKEN"  # /admin/* needs this bearer token; unset: admin disabled
    model_name: str = "gradus"              # the model's name on the Open Inference Protocol v2 paths
    feedback: str = "data/feedback"         # labeled feedback as JSONL (folder or s3://), read by a feedback source
    recent_requests: int = Field(100_000, ge=1)  # request ids remembered for feedback by request_id
    endpoint_url: str | None = None         # S3-compatible server for s3:// log and feedback locations
    shutdown_delay_s: float = Field(2.0, ge=0)  # not ready for this long before stopping (load balancers drain)
    prediction_log: PredictionLogConfig = PredictionLogConfig()

    @field_validator("ensemble")
    @classmethod
    def _ensemble_has_members(cls, members: tuple[EnsembleMember, ...]) -> tuple[EnsembleMember, ...]:
        if len(members) == 1:
            raise ValueError("an ensemble needs two or more members (leave it empty to serve one model)")
        return members

    def feedback_files(self) -> str:
        """What a reader passes to read every feedback file: a glob of the folder, or the s3:// prefix."""
        return self.feedback if self.feedback.startswith("s3://") else f"{self.feedback.rstrip('/')}/*.jsonl"

    def url(self) -> str:
        """Where a client on this machine reaches the service."""
        return f"http://{self.host}:{self.port}"


class ReleaseConfig(_Section):
    """The gradual release (flows/release.py): its steps, how long each is watched, and the analysis limits."""

    shadow: bool = True                     # start with a shadow step (a copy of traffic, answers never returned)
    canary_steps: tuple[float, ...] = (0.05, 0.25, 0.5)  # shares of traffic, increasing, each in (0, 1)
    min_dwell_s: float = Field(300.0, ge=0)  # each step lasts at least this long ...
    min_requests: int = Field(200, ge=1)    # ... and until the candidate answered this many texts in it
    max_step_s: float = Field(3600.0, gt=0)  # a step still short of data (or failing to load) then rolls back
    check_interval_s: float = Field(60.0, gt=0)  # one analysis of the step's window this often
    failure_limit: int = Field(2, ge=1)     # failed checks that fail a step (and roll back)
    min_samples: int = Field(100, ge=1)     # texts a comparison needs before it is judged
    confidence: float = Field(0.95, gt=0.5, lt=1)  # of the intervals (Wilson, paired accuracy)
    min_agreement: float = Field(0.85, ge=0, le=1)  # lower bound of agreement (label sets: mean Jaccard)
    min_exact_agreement: float = Field(0.7, ge=0, le=1)  # label sets: Wilson lower bound of texts given the same set
    max_label_js: float = Field(0.1, ge=0, le=1)  # Jensen-Shannon divergence (base 2) of predicted labels
    max_confidence_drop: float = Field(0.1, ge=0, le=1)  # mean confidence, champion minus candidate
    latency_p99_factor: float = Field(1.5, ge=1)  # fail above champion p99 x this ...
    latency_slack_ms: float = Field(20.0, ge=0)  # ... and above champion p99 + this (noise on fast models)
    min_feedback: int = Field(50, ge=1)     # labeled answers before online accuracy (label sets: micro-F1) is judged
    max_accuracy_drop: float = Field(0.02, ge=0, le=1)  # fail when it is lower by more, with confidence
    require_approval: bool = True           # a person approves the last step (pause + form in the Prefect UI)
    approval_timeout_s: float = Field(86400.0, gt=0)
    on_approval_timeout: Literal["rollback", "hold"] = "rollback"  # hold: keep the last canary weight
    service_url: str | None = None          # the service whose /metrics is read; default serving host:port

    @field_validator("canary_steps")
    @classmethod
    def _increasing_shares(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < share < 1 for share in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"canary_steps must be increasing shares between 0 and 1 (exclusive), got {list(steps)}")
        return steps


class SearchDimension(_Section):
    """One searched train key: a [low, high] range (integers if both bounds are, log scale on request) or a
    list of choices."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    choices: tuple[int | float | str | bool, ...] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchDimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise ValueError("give either choices (a non-empty list) or low and high, not both")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError("a range needs low < high (or give choices)")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not self.log


def _default_space() -> dict[str, SearchDimension]:
    return {"learning_rate": SearchDimension(low=2e-5, high=3e-4, log=True),
            "epochs": SearchDimension(low=3, high=15),
            "batch_size": SearchDimension(choices=(16, 32, 64)),
            "warmup_ratio": SearchDimension(low=0.0, high=0.2),
            "weight_decay": SearchDimension(low=0.0, high=0.1),
            "max_length": SearchDimension(choices=(32, 64, 128))}


class TuneConfig(_Section):
    """gradus tune: a budgeted Optuna search in which every trial is a DVC experiment (gradus/tuning.py)."""

    trials: int = Field(20, ge=1)
    timeout_minutes: float | None = Field(240.0, gt=0)  # no new trial starts after this
    seed: int = 0                                        # of the sampler (TPE)
    pruning: bool = True                                 # stop a trial below the median of earlier ones
    startup_trials: int = Field(3, ge=0)                 # trials never pruned (the median needs a few)
    warmup_evaluations: int = Field(1, ge=0)             # evaluations of a trial before it can be pruned
    space: dict[str, SearchDimension] = Field(default_factory=_default_space)

    @model_validator(mode="after")
    def _train_keys_with_valid_values(self) -> TuneConfig:
        for key, dimension in self.space.items():
            if key not in TrainConfig.model_fields:
                raise ValueError(f"space: {key!r} is not a train key (one of {', '.join(TrainConfig.model_fields)})")
            values = dimension.choices if dimension.choices is not None else (dimension.low, dimension.high)
            for value in values:
                try:
                    TrainConfig(**{key: value})
                except ValidationError as exc:
                    raise ValueError(f"space.{key}: {value!r} is not a valid train.{key} "
                                     f"({exc.errors()[0]['msg']})") from None
        return self


class RunsConfig(_Section):
    """Where flow runs work: each in a workspace of its own, so no run's overrides reach another run."""

    folder: str = ".gradus/runs"              # workspaces live here (ignored by git and DVC)
    workspaces: int = Field(2, ge=1, le=16)   # runs side by side; one more waits for a free workspace
    wait_timeout_s: float = Field(86400, gt=0)  # a run waiting longer than this for a workspace fails
