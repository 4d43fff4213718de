"""A classifier on the pooling its base encoder was trained with: the token states pooled as the base's
sentence-transformers config says (the mean, for the packaged MiniLM), optionally L2-normalised, then one
linear layer. It is a transformers model (`AutoModelForSequenceClassification` loads it once this module has
registered it), so the Trainer trains it, `save_pretrained` stores it as safetensors, and the evaluate stage,
ONNX export, ensembles and the service take it like any classifier.

Why by hand: transformers' sequence-classification heads pool through the [CLS] token and a pooler layer,
which is not how a sentence encoder was trained (its pretrained pooler is unused and its [CLS] state is not
its sentence embedding); sentence-transformers' models and SetFit's heads are not transformers models the
Trainer, the ONNX export and the service take. With normalisation the head is exactly a linear model of the
embeddings the frozen-encoder probe (gradus/probe.py) fits, so the probe's fitted logistic regression is this
model with the encoder left as it is (`train.method: probe`), and the head LP-FT starts fine-tuning from.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

MODEL_TYPE = "gradus_pooled"
MULTI_HOT = "multi_label_classification"  # transformers' problem_type of a head with one sigmoid per label


def pool(hidden: Any, mask: Any, pooling: str) -> Any:
    """Pool token states [batch, tokens, hidden] into text vectors as a sentence encoder does."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(1).values
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


@functools.cache
def classes() -> tuple[type, type]:
    """(config class, model class), registered with transformers' Auto classes on first use."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForSequenceClassification,
        PretrainedConfig,
        PreTrainedModel,
    )
    from transformers.modeling_outputs import SequenceClassifierOutput

    class PooledClassifierConfig(PretrainedConfig):
        model_type = MODEL_TYPE

        def __init__(self, encoder: dict[str, Any] | None = None, pooling: str = "mean", normalize: bool = True,
                     **kwargs: Any) -> None:
            self.encoder = dict(encoder or {})
            self.pooling = pooling
            self.normalize = normalize
            # What the ONNX optimizer and the embeddings code read from a classifier's config.
            self.hidden_size = self.encoder.get("hidden_size")
            self.num_attention_heads = self.encoder.get("num_attention_heads")
            super().__init__(**kwargs)

    class PooledClassifier(PreTrainedModel):
        config_class = PooledClassifierConfig
        base_model_prefix = "encoder"

        def __init__(self, config: PooledClassifierConfig) -> None:
            super().__init__(config)
            encoder_config = AutoConfig.for_model(**config.encoder)
            attention = getattr(config, "_attn_implementation", None)
            if attention:
                encoder_config._attn_implementation = attention
            self.encoder = bare_encoder(lambda **kw: AutoModel.from_config(encoder_config, **kw))
            self.classifier = torch.nn.Linear(encoder_config.hidden_size, config.num_labels)
            self.post_init()

        def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                    labels: Any = None, output_hidden_states: bool | None = None, **_: Any) -> Any:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                inputs["token_type_ids"] = token_type_ids
            out = self.encoder(**inputs, output_hidden_states=output_hidden_states)
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            pooled = pool(out.last_hidden_state, mask, self.config.pooling)
            if self.config.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            logits = self.classifier(pooled)
            loss = None
            if labels is not None and self.config.problem_type == MULTI_HOT:  # a label set: one sigmoid per label
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            elif labels is not None:
                loss = torch.nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)

    AutoConfig.register(MODEL_TYPE, PooledClassifierConfig)
    AutoModelForSequenceClassification.register(PooledClassifierConfig, PooledClassifier)
    return PooledClassifierConfig, PooledClassifier


def bare_encoder(make: Any) -> Any:
    """An encoder without the pooler layer the head does not use (an unused parameter would fail DDP), for
    architectures that have one (BERT's kind); the others take no such argument."""
    try:
        return make(add_pooling_layer=False)
    except TypeError:
        return make()


def from_base(location: str, labels: list[str], pooling: str, normalize: bool, revision: str | None = None,
              problem_type: str | None = None) -> Any:
    """A pooled classifier whose encoder is the base model's (its weights as trained) and a new linear head;
    `problem_type` as transformers names it (None: one label per text)."""
    from transformers import AutoConfig, AutoModel

    config_class, model_class = classes()
    encoder = bare_encoder(lambda **kw: AutoModel.from_pretrained(location, revision=revision, use_safetensors=True,
                                                                   **kw))
    base_config = AutoConfig.from_pretrained(location, revision=revision)
    config = config_class(encoder=base_config.to_dict(), pooling=pooling, normalize=normalize,
                          num_labels=len(labels), id2label=dict(enumerate(labels)),
                          label2id={label: i for i, label in enumerate(labels)}, problem_type=problem_type)
    model = model_class(config)
    model.encoder = encoder
    return model


def set_head(model: Any, coef: np.ndarray, intercept: np.ndarray) -> None:
    """Make the linear head a fitted logistic regression's (classes in the model's label order). A binary
    regression's one row w becomes the logits [0, w.x + b], whose softmax is its sigmoid."""
    import torch

    if coef.shape[0] == 1 and model.config.num_labels == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros_like(intercept), intercept])
    head = model.classifier
    if tuple(coef.shape) != tuple(head.weight.shape):
        raise ValueError(f"head of shape {tuple(head.weight.shape)} cannot take coefficients {coef.shape}")
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(coef, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(intercept, dtype=head.bias.dtype))
