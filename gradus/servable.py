"""A registry version made ready to predict: its safetensors weights (torch), one of its ONNX variants that
passed parity, the fastest of those on this machine, or, for an ensemble version, its members voting."""

from __future__ import annotations

import json
from typing import Any

from gradus import compression
from gradus.ensemble import ENSEMBLE_FILE, build_ensemble
from gradus.errors import ModelError
from gradus.modeling import load_classifier
from gradus.registry.aliases import ALIASES
from gradus.registry.versions import Registry


def load_version(registry: Registry, ref: str, device: str = "cpu", bf16: bool | None = None,
                 backend: str = "torch", batch_size: int = 32) -> Any:
    """A verified version (id, prefix or alias) ready to predict: from safetensors (backend torch), one of
    its ONNX variants that passed parity (onnx, onnx-int8), the fastest of those on this machine (auto:
    timed in batches of batch_size), or, for an ensemble version, its members. It knows its version id,
    the alias it was loaded by, its training max_length and its manifest."""
    folder, manifest = registry.fetch(ref)
    version, alias = manifest["version"], ref if ref in (*ALIASES, "canary") else None
    if ENSEMBLE_FILE in manifest["files"]:
        members = json.loads((folder / ENSEMBLE_FILE).read_text(encoding="utf-8"))["members"]
        loaded = [load_version(registry, m["version"], device, bf16, backend, batch_size) for m in members]
        return build_ensemble(loaded, [m["weight"] for m in members], version=version, alias=alias,
                              manifest=manifest)
    max_length = manifest["lineage"]["params"]["train"]["max_length"]
    variants = [v for v in compression.VARIANTS if compression.variant_file(v) in manifest["files"]]

    def variant(name: str) -> Any:
        return compression.load_onnx(folder / compression.variant_file(name), folder, name,
                                     max_length=max_length, version=version, alias=alias, manifest=manifest)

    if backend in compression.VARIANTS:
        if backend not in variants:
            raise ModelError(f"version {version} has no {backend} variant that passed parity (it has: "
                             f"{', '.join(variants) or 'none'}); serve it with backend torch or auto")
        return variant(backend)
    model = load_classifier(folder, device, max_length=max_length, version=version, alias=alias, bf16=bf16,
                            manifest=manifest)
    if backend != "auto" or device != "cpu" or not variants:  # the variants run on the CPU only
        return model
    return compression.fastest([model, *map(variant, variants)], batch_size)
