"""Edits by someone with write access to the store, on a local folder and on S3: what is detected (every case
below), and what a key (GRADUS_REGISTRY_KEY) adds. Each case is a real edit of stored bytes, then the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from gradus.errors import IntegrityError
from gradus.registry.integrity import KEY_ENV, sha256_bytes
from gradus.servable import load_version
from tests.reliability.conftest import Backend, gradus, register

GATE_FAILED = {"passed": False, "mode": "challenger", "reasons": ["macro-F1 CI below the margin"]}


def manifest_of(backend: Backend, version: str) -> dict:
    return json.loads(backend.read(f"versions/{version}/manifest.json"))


def rewrite_manifest(backend: Backend, version: str, edit) -> None:
    manifest = manifest_of(backend, version)
    edit(manifest)
    backend.write(f"versions/{version}/manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory: pytest.TempPathFactory, tiny_classifier_dir: Path) -> bytes:
    """A different, valid safetensors file of the same shape (what an attacker would swap in)."""
    torch.manual_seed(99)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir)
    for parameter in model.parameters():
        parameter.data.normal_()
    out = tmp_path_factory.mktemp("other")
    model.save_pretrained(out)
    return (out / "model.safetensors").read_bytes()


def test_swapped_weights_with_an_edited_manifest_are_refused(backend: Backend, tiny_classifier_dir: Path,
                                                            other_weights: bytes) -> None:
    good, bad = register(backend, tiny_classifier_dir, "good"), register(backend, tiny_classifier_dir, "bad")
    backend.write(f"versions/{bad}/files/model.safetensors", other_weights)

    def forge(manifest: dict) -> None:
        manifest["files"]["model.safetensors"] = {"sha256": sha256_bytes(other_weights), "size": len(other_weights)}
        manifest["metrics"]["accuracy"] = 0.99

    rewrite_manifest(backend, bad, forge)
    checked = gradus("verify", "--registry", backend.uri)
    assert checked.returncode == 4 and f"ok      {good}" in checked.stdout
    assert f"{bad}: versions/{bad}/manifest.json: does not match its version id" in checked.stderr
    with pytest.raises(IntegrityError, match=f"{bad}: .*does not match its version id"):
        load_version(backend.registry(), bad)
    assert load_version(backend.registry(), good).version == good


def test_edited_metrics_or_gate_in_a_manifest_are_detected(backend: Backend, tiny_classifier_dir: Path) -> None:
    version = register(backend, tiny_classifier_dir, "m")
    rewrite_manifest(backend, version, lambda m: m["metrics"].update(accuracy=0.999))
    checked = gradus("verify", version, "--registry", backend.uri)
    assert checked.returncode == 4 and "changed since registration" in checked.stderr
    with pytest.raises(IntegrityError, match="changed since registration"):
        load_version(backend.registry(), version)


def test_a_failed_verdict_flipped_to_passed_does_not_promote(backend: Backend, tiny_classifier_dir: Path) -> None:
    registry = backend.registry()
    manifest, _ = registry.register(tiny_classifier_dir, {"tag": "f", "params": {"train": {"max_length": 32}},
                                                          "code": {"commit": None}}, {"accuracy": 0.5},
                                    GATE_FAILED, run="t")
    version = manifest["version"]
    refused = gradus("promote", version, "--registry", backend.uri)
    assert refused.returncode == 2 and "did not pass the gate (macro-F1 CI below the margin)" in refused.stderr
    # 1. The verdict record itself is edited: its digest no longer matches the audited one.
    [key] = [k for k in _keys(backend, f"versions/{version}/verdicts/")]
    original = backend.read(key)
    record = json.loads(original)
    record["gate"]["passed"] = True
    backend.write(key, json.dumps(record).encode())
    edited = gradus("promote", version, "--registry", backend.uri)
    assert edited.returncode == 4 and "gate verdict is missing or was changed" in edited.stderr
    # 2. A new, self-consistent "passed" record that the audit log does not hold is never read.
    backend.write(key, original)
    forged = json.dumps({"version": version, "gate": {"passed": True}, "run": "x", "at": "9999"}).encode()
    backend.write(f"versions/{version}/verdicts/{sha256_bytes(forged)}.json", forged)
    # 3. The copy of the verdict inside the manifest is flipped.
    rewrite_manifest(backend, version, lambda m: m["gate"].update(passed=True))
    flipped = gradus("promote", version, "--registry", backend.uri)
    assert flipped.returncode == 4 and "changed since registration" in flipped.stderr
    assert backend.registry().aliases().champion is None


def _keys(backend: Backend, prefix: str) -> list[str]:
    return backend.registry().store.keys(prefix)


def test_a_key_makes_manifest_and_record_rewrites_detectable(backend: Backend, tiny_classifier_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a key the registry is tamper-evident: an edit of stored objects is caught unless the writer
    also rewrites the audit record that vouches for them. With GRADUS_REGISTRY_KEY (kept outside the store)
    even that rewrite is caught: nobody without the key can produce the HMAC."""
    def forge_everything(version: str) -> None:
        rewrite_manifest(backend, version, lambda m: m["metrics"].update(accuracy=0.999))
        data = backend.read(f"versions/{version}/manifest.json")
        for key in _keys(backend, "audit/"):
            event = json.loads(backend.read(key))
            if event["action"] == "register" and event["version"] == version:
                event["details"]["manifest_sha256"] = sha256_bytes(data)
                backend.write(key, json.dumps(event).encode())

    unkeyed = register(backend, tiny_classifier_dir, "unkeyed")
    forge_everything(unkeyed)
    assert backend.registry().verify(unkeyed) == []  # the limit of tamper-evidence, stated by a test
    monkeypatch.setenv(KEY_ENV, "a-secret-the-store-never-sees")
    keyed = register(backend, tiny_classifier_dir, "keyed")
    assert backend.registry().verify(keyed) == []
    forge_everything(keyed)
    [problem] = backend.registry().verify(keyed)
    assert problem.key.endswith("manifest.json") and "HMAC signature does not match" in problem.detail
    unsigned = backend.registry().verify(unkeyed)  # with the key set, unsigned records are not trusted
    assert {p.key.split("/")[2] for p in unsigned} == {"manifest.json", "verdicts"}
    assert all("not signed" in p.detail for p in unsigned)


@pytest.mark.parametrize("damage", [b"{not json", json.dumps({"version": "x"}).encode()])
def test_a_damaged_manifest_is_an_integrity_failure_and_list_shows_the_rest(
        backend: Backend, tiny_classifier_dir: Path, damage: bytes) -> None:
    good, broken = register(backend, tiny_classifier_dir, "ok"), register(backend, tiny_classifier_dir, "broken")
    backend.write(f"versions/{broken}/manifest.json", damage)
    listed = gradus("list", "--registry", backend.uri)
    assert listed.returncode == 4 and good in listed.stdout and f"{broken}  DAMAGED" in listed.stdout
    assert "Traceback" not in listed.stderr and broken in listed.stderr
    for command in (["verify"], ["verify", broken], ["promote", broken], ["show", broken]):
        done = gradus(*command, "--registry", backend.uri)
        assert done.returncode == 4, (command, done.stderr)
        assert broken in done.stderr and "Traceback" not in done.stderr


def test_missing_champion_and_missing_registry_fail_verify(backend: Backend, tiny_classifier_dir: Path,
                                                           tmp_path: Path) -> None:
    champion = register(backend, tiny_classifier_dir, "c")
    backend.registry().promote(champion, run="t", reason="setup")
    backend.registry().store.delete(f"versions/{champion}/manifest.json")
    checked = gradus("verify", "--registry", backend.uri)
    assert checked.returncode == 4 and f"alias champion = {champion}: no such version" in checked.stderr
    nowhere = gradus("verify", "--registry", str(tmp_path / "no-such-registry"))
    assert nowhere.returncode == 2 and "no registry there" in nowhere.stderr


def test_an_alias_pointing_outside_the_registry_is_refused(backend: Backend, tiny_classifier_dir: Path) -> None:
    champion = register(backend, tiny_classifier_dir, "c")
    state = backend.registry().promote(champion, run="t", reason="setup")
    key = f"aliases/{state.generation:012d}.json"
    record = json.loads(backend.read(key))
    record["aliases"]["champion"] = "../../outside"
    backend.write(key, json.dumps(record).encode())
    with pytest.raises(IntegrityError, match=r"alias champion = '\.\./\.\./outside' is not a version id"):
        load_version(backend.registry(), "champion")
    checked = gradus("verify", "--registry", backend.uri)
    assert checked.returncode == 4 and "alias champion" in checked.stderr


def test_every_unlisted_file_is_reported_temporary_names_too(backend: Backend, tiny_classifier_dir: Path) -> None:
    version = register(backend, tiny_classifier_dir, "u")
    for name in ("extra.json", "sneaky.tmp", ".hidden.abc.tmp"):
        backend.write(f"versions/{version}/files/{name}", b"{}")
    details = {p.key.rsplit("/", 1)[-1] for p in backend.registry().verify(version)
               if "not in the manifest" in p.detail}
    assert details == {"extra.json", "sneaky.tmp", ".hidden.abc.tmp"}


def test_a_generation_from_the_future_names_the_current_one(backend: Backend, tiny_classifier_dir: Path) -> None:
    one, two = register(backend, tiny_classifier_dir, "1"), register(backend, tiny_classifier_dir, "2")
    backend.registry().promote(one, run="t", reason="a")
    backend.registry().promote(two, run="t", reason="b")
    done = gradus("promote", one, "--expect-generation", "7", "--registry", backend.uri)
    assert done.returncode == 3
    assert "expected generation 7, but the registry is only at generation 2" in done.stderr
