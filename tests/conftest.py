"""Shared fixtures: a tiny real BERT, and throwaway git+DVC copies of this project to run pipelines in."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gradus.config.editing import set_values

ROOT = Path(__file__).resolve().parents[1]
# Real data (CC BY 4.0, with its licence) carried in the repository; tests and benchmarks read it from here.
BANKING77 = ROOT / "benchmarks" / "data" / "banking77"
PROJECT_FILES = ("gradus", "tasks", "data_checks", "flows", "dvc.yaml", "params.yaml", "data/inputs", "data/sources.d",
                 ".gitignore", ".dvcignore")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread for torch (and BLAS) in this process and every stage it starts: the tests' toy model (hidden
# 32) gains little from a second thread, and the suite runs servers beside the stages on 2 cores, where torch's
# spinning threads fight them (docs/tests.md: the tiny train stage 10.9 s vs 9.5 s idle, 15 s vs 53 s contended).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def tool_env() -> dict[str, str]:
    """Environment in which `python`, `dvc` and `gradus` are this virtualenv's."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def sh(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; on failure the assertion shows what it printed."""
    done = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    if check:
        assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with the real MiniLM tokenizer, saved as safetensors."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from gradus.modeling import resolve_base

    packaged = resolve_base("packaged").location
    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(packaged)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_params(model_dir: Path, rows: int = 900) -> dict[str, object]:
    """Overrides that make the pipeline run in seconds on the tiny model."""
    return {
        "data.sources.0.rows": rows,
        "model.base": str(model_dir),
        "train.epochs": 12,
        "train.learning_rate": 0.002,
        "train.batch_size": 32,
        "train.warmup_ratio": 0.0,
        "train.device": "cpu",
        # A randomly initialised toy plateaus for epochs before it learns: it trains its 12 epochs in full.
        "train.early_stopping_patience": 0,
        # A toy model: floors it can clear, so the gate's comparisons are what the tests exercise.
        "gate.min_accuracy": 0.25,
        "gate.min_macro_f1": 0.15,
        "gate.max_latency_ms_p95": 1000,
        "gate.bootstrap_samples": 500,
        "evaluate.latency_samples": 20,
        "compress.timing_seconds": 0.2,
        # The ONNX export costs a stage ~8 s per run; the tests that check it (test_dvc_repro.py, the training
        # flow's first run, test_compression.py) turn it on.
        "compress.enabled": False,
        "evaluate.behavioral.min_stability": {"case": 0.5, "punctuation": 0.5, "typo": 0.5},
        # The frozen-encoder probe costs seconds per run; tests/pipeline/test_dvc_repro.py turns it on.
        "evaluate.probe": False,
        # A randomly initialised toy has nothing for a probe to read, so the tests' pipelines fine-tune a new
        # head (their gate checks rely on how that toy learns); the default (lp_ft) runs in test_dvc_repro.py,
        # every method in tests/model/test_methods.py.
        "train.method": "finetune",
    }


def set_params(path: Path, values: dict[str, object]) -> None:
    """Write dotted values into a params.yaml (tests start from the project's real one)."""
    set_values(path, values)


@pytest.fixture()
def project_repo(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A fresh git + DVC repository holding this project's pipeline, configured for the tiny model."""
    repo = tmp_path / "project"
    repo.mkdir()
    for name in PROJECT_FILES:
        source = ROOT / name
        target = repo / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    set_params(repo / "params.yaml", tiny_params(tiny_model_dir))
    sh(["git", "init", "-q", "-b", "main"], repo)
    sh(["git", "config", "user.email", "test@gradus.invalid"], repo)
    sh(["git", "config", "user.name", "gradus tests"], repo)
    sh([sys.executable, "-m", "dvc", "init", "-q"], repo)
    sh([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(tmp_path / "dvc-remote")], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-q", "-m", "project"], repo)
    return repo


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny BERT as a 3-label classifier folder, as the train stage writes one (safetensors only)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from gradus.modeling import save_label_map

    out = tmp_path_factory.mktemp("tiny-classifier")
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    save_label_map(out, ["balance", "card_lost", "refund"])
    return out


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A local S3-compatible server (moto's server mode) on loopback, over real HTTP, for this session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """Credentials and endpoint in the environment (as users set them), and a client to stage objects."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return boto3.client("s3", endpoint_url=s3_endpoint)


class WebhookReceiver:
    """A local HTTP endpoint that records every JSON body POSTed to it (a pager, a chat channel)."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, found: Callable[[list[dict]], object], timeout: float) -> object:
        """The first truthy found(received) within timeout, else an AssertionError listing what came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := found(self.received):
                return result
            time.sleep(0.3)
        raise AssertionError(f"not received in {timeout:g} s; received: {self.received}")

    def close(self) -> None:
        self.server.shutdown()


# What starts a server process (a Prefect server, `gradus serve`, moto's S3 server, Prometheus, ...): a test
# that calls one of these, or uses a fixture that does, is marked `server` (`make test-fast` leaves it out).
STARTS_A_SERVER = re.compile(r"\b(prefect_test_harness|start_until_ready|start_service|ThreadedMotoServer|"
                             r"prefect_with_ui)\(|getfixturevalue\(\"s3\"\)")
SERVER_FIXTURES = {"s3", "s3_endpoint", "service", "prefect_ui"}


def _starts_a_server(item: pytest.Item) -> bool:
    if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    functions = [getattr(item, "function", None)]
    functions += [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
    for function in functions:
        try:
            source = inspect.getsource(function) if function else ""
        except (OSError, TypeError):
            continue
        if STARTS_A_SERVER.search(source):
            return True
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _starts_a_server(item):
            item.add_marker(pytest.mark.server)
