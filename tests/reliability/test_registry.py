"""The registry under failure, on a local folder and on S3 (moto's server on loopback, real HTTP):
killed mid-registration, concurrent promotions, tampered weights, pickle payloads."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from gradus.errors import ConflictError, IntegrityError, RegistryError
from gradus.servable import load_version
from tests.conftest import ROOT, sh, tool_env
from tests.helpers.registry import lineage
from tests.reliability.conftest import Backend, gradus, register, worker


def test_register_is_idempotent_and_keeps_lineage(backend: Backend, tiny_classifier_dir: Path) -> None:
    registry = backend.registry()
    first, created = registry.register(tiny_classifier_dir, lineage("a"), {"accuracy": 0.5}, None, "run-1")
    again, created_again = registry.register(tiny_classifier_dir, lineage("a"), {"accuracy": 0.5}, None, "run-1")
    assert created and not created_again and again == first
    assert [m["version"] for m in registry.versions()] == [first["version"]]
    assert first["lineage"]["datasets"] == {"raw": "md5-a"} and set(first["files"]) >= {"model.safetensors",
                                                                                       "labels.json", "config.json"}
    other = register(backend, tiny_classifier_dir, "b")  # same files, other data: another version
    assert other != first["version"] and registry.resolve(other[:6]) == other
    assert registry.verify() == []
    loaded = load_version(registry, first["version"])
    assert loaded.labels == ("balance", "card_lost", "refund") and loaded.version == first["version"]
    assert loaded.manifest["version"] == first["version"] and loaded.model.config.num_labels == 3
    assert loaded.alias is None and loaded.max_length == first["lineage"]["params"]["train"]["max_length"]


def test_aliases_promote_rollback_and_canary(backend: Backend, tiny_classifier_dir: Path) -> None:
    registry = backend.registry()
    one, two = register(backend, tiny_classifier_dir, "1"), register(backend, tiny_classifier_dir, "2")
    registry.promote(one, run="t", reason="first")
    state = registry.promote(two, run="t", reason="second")
    assert (state.champion, state.previous, state.generation) == (two, one, 2)
    assert registry.resolve("champion") == two
    state = registry.set_canary(one, 0.25, run="t", reason="canary")
    assert state.canary == {"version": one, "weight": 0.25}
    state = registry.rollback(run="t", reason="bad release")
    assert (state.champion, state.previous) == (one, None)
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(run="t", reason="again")
    with pytest.raises(RegistryError, match="no such version"):
        registry.promote("vdeadbeef0000", run="t", reason="typo")
    actions = [(e["action"], e["outcome"]) for e in registry.audit_log()
               if e["action"] not in ("register", "gate-verdict")]
    assert actions == [("promote", "ok"), ("promote", "ok"), ("canary", "ok"), ("rollback", "ok")]


@pytest.mark.parametrize("point", ["register:file:1", "register:file:4", "register:before-manifest"])
def test_killed_mid_registration_leaves_no_half_version(backend: Backend, tiny_classifier_dir: Path,
                                                        point: str) -> None:
    champion = register(backend, tiny_classifier_dir, "champion")
    backend.registry().promote(champion, run="t", reason="setup")
    before = backend.registry().aliases()
    killed = worker(backend, tiny_classifier_dir, "new", failpoint=point)
    assert killed.returncode == -9, killed.stderr  # really killed, at that point
    registry = backend.registry()
    assert [m["version"] for m in registry.versions()] == [champion]  # nothing half-made is visible
    assert registry.aliases() == before
    assert registry.verify() == []
    events = [e["action"] for e in registry.audit_log() if e["action"] != "gate-verdict"]
    assert events == ["register", "promote"]  # no event for the dead run
    done = worker(backend, tiny_classifier_dir, "new")  # the retried run completes the same version
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["created"] and len(registry.versions()) == 2 and registry.verify() == []


def test_killed_after_the_manifest_the_version_is_whole_and_a_retry_returns_it(
        backend: Backend, tiny_classifier_dir: Path) -> None:
    killed = worker(backend, tiny_classifier_dir, "x", failpoint="register:after-manifest")
    assert killed.returncode == -9
    registry = backend.registry()
    [manifest] = registry.versions()
    # Whole, but killed before its registration record was written: nothing vouches for the manifest yet, so
    # it is not loaded (fail closed) until a retry, which finds the same version and writes the record.
    [problem] = registry.verify()
    assert problem.version == manifest["version"] and "no registration record" in problem.detail
    with pytest.raises(IntegrityError, match="no registration record"):
        load_version(registry, manifest["version"])
    retry = json.loads(worker(backend, tiny_classifier_dir, "x").stdout)
    assert retry == {"version": manifest["version"], "created": False}
    assert registry.verify() == [] and load_version(registry, manifest["version"]).version == manifest["version"]


def test_killed_while_moving_aliases_changes_nothing(backend: Backend, tiny_classifier_dir: Path) -> None:
    one, two = register(backend, tiny_classifier_dir, "1"), register(backend, tiny_classifier_dir, "2")
    backend.registry().promote(one, run="t", reason="setup")
    killed = gradus("promote", two, "--registry", backend.uri, failpoint="aliases:before-write")
    assert killed.returncode == -9
    state = backend.registry().aliases()
    assert (state.champion, state.generation) == (one, 1)


def test_concurrent_promotions_exactly_one_wins_and_the_audit_log_shows_all(
        backend: Backend, tiny_classifier_dir: Path) -> None:
    registry = backend.registry()
    versions = [register(backend, tiny_classifier_dir, str(i)) for i in range(5)]
    registry.promote(versions[0], run="t", reason="setup")
    # Four processes that all read generation 1 try to promote four different versions at once.
    racers = [subprocess.Popen([sys.executable, "-m", "cli.main", "models", "promote", v, "--registry", backend.uri,
                                "--expect-generation", "1", "--reason", f"race {v}"],
                               cwd=ROOT, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for v in versions[1:]]
    outcomes = [(p.wait(), *p.communicate()) for p in racers]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 3, 3, 3], outcomes
    assert all("conflict: aliases changed concurrently" in err for code, _, err in outcomes if code == 3)
    winner = versions[1 + [code for code, _, _ in outcomes].index(0)]
    state = registry.aliases()
    assert (state.champion, state.previous, state.generation) == (winner, versions[0], 2)
    promotions = [e for e in registry.audit_log() if e["action"] == "promote" and e["reason"].startswith("race")]
    assert sorted(e["outcome"] for e in promotions) == ["conflict", "conflict", "conflict", "ok"]
    assert {e["reason"] for e in promotions} == {f"race {v}" for v in versions[1:]}
    with pytest.raises(ConflictError, match="expected generation 1, the registry is at generation 2"):
        registry.promote(versions[4], run="t", reason="stale", expected_generation=1)


def test_tampered_weights_fail_verify_and_load_naming_the_file(backend: Backend, tiny_classifier_dir: Path) -> None:
    good, bad = register(backend, tiny_classifier_dir, "good"), register(backend, tiny_classifier_dir, "bad")
    key = f"versions/{bad}/files/model.safetensors"
    data = bytearray(backend.read(key))
    data[-1] ^= 0xFF  # one flipped bit pattern in the last weight byte
    backend.write(key, bytes(data))
    checked = gradus("verify", "--registry", backend.uri)
    assert checked.returncode == 4, checked.stdout + checked.stderr
    assert f"FAILED  {bad}" in checked.stdout and f"ok      {good}" in checked.stdout
    assert f"{key}: sha256" in checked.stderr
    assert gradus("verify", good, "--registry", backend.uri).returncode == 0
    with pytest.raises(IntegrityError, match=f"refusing to load: {bad}: {key}: sha256"):
        load_version(backend.registry(), bad)
    assert load_version(backend.registry(), good).labels == ("balance", "card_lost", "refund")


class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def test_pickle_weights_are_refused_and_never_executed(backend: Backend, tiny_classifier_dir: Path,
                                                       tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Payload(marker))
    # The payload is live: unpickling it elsewhere does create the marker.
    probe = tmp_path / "probe"
    sh([sys.executable, "-c", f"import pickle; pickle.loads({pickle.dumps(Payload(probe))!r})"], ROOT)
    assert probe.exists()

    # 1. A model folder whose weights are a pickle cannot be registered.
    folder = tmp_path / "pickled-model"
    folder.mkdir()
    for name in ("config.json", "labels.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny_classifier_dir / name).read_bytes())
    (folder / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(IntegrityError, match=r"refusing to register 'pytorch_model\.bin'"):
        backend.registry().register(folder, lineage("p"), {}, None, "t")

    # 2. Someone with write access swaps the weights for a pickle and fixes up the manifest's checksum.
    version = register(backend, tiny_classifier_dir, "swap")
    key = f"versions/{version}/files/model.safetensors"
    backend.write(key, payload)
    manifest = json.loads(backend.read(f"versions/{version}/manifest.json"))
    manifest["files"]["model.safetensors"] = {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
    backend.write(f"versions/{version}/manifest.json", json.dumps(manifest).encode())
    with pytest.raises(IntegrityError, match=f"{version}: .*manifest.json: does not match its version id"):
        load_version(backend.registry(), version)
    assert gradus("verify", version, "--registry", backend.uri).returncode == 4

    # 3. A pickle dropped next to good weights (transformers would prefer some such names) is refused.
    other = register(backend, tiny_classifier_dir, "drop")
    backend.write(f"versions/{other}/files/pytorch_model.bin", payload)
    with pytest.raises(IntegrityError, match=r"pytorch_model\.bin: not in the manifest"):
        load_version(backend.registry(), other)
    listed = gradus("verify", other, "--registry", backend.uri)
    assert listed.returncode == 4 and "pytorch_model.bin" in listed.stderr
    assert not marker.exists()


def test_alias_changes_and_fetches_read_only_the_audit_events_new_since_the_last_read(
        backend: Backend, tiny_classifier_dir: Path) -> None:
    """The audit log grows with the registry's history; checking a version's registration record on every
    alias change and fetch must not re-read all of it (one GET per event on S3)."""
    versions = [register(backend, tiny_classifier_dir, f"h{n}") for n in range(4)]
    registry = backend.registry()
    history = registry.audit_log()
    assert registry.events.reads == len(history) >= 8  # the first read fetches everything once
    for version in versions:
        before = len(registry.audit_log())
        reads = registry.events.reads
        registry.promote(version, run="history", reason="walk")
        registry.fetch("champion")
        grown = len(registry.audit_log()) - before
        assert grown == 1 and registry.events.reads - reads == grown  # only the new promote event was fetched
    fresh = backend.registry().audit_log()
    assert fresh == registry.audit_log()  # the incremental reader sees what a fresh reader sees
