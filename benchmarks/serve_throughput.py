"""Serving throughput and latency, side by side in one run, on the same machine, model and texts.

    python -m benchmarks.serve_throughput [--quick]

  naive   what people write first: a FastAPI route calling a Hugging Face pipeline("text-classification")
          per request (uvicorn, one process)
  gradus  `gradus serve`: dynamic batching, length-sorted padding, bf16 where it pays
  raw     the same LoadedModel on pre-made batches of 32 texts, no HTTP: the ceiling, measured two ways on
          every core, one pass at a time on all torch threads and the service's lanes (passes side by side,
          the cores shared among them; measured before and after the gradus phases, the mean, as this
          machine's speed drifts by a tenth between minutes); the faster of the two is the ceiling the
          service is held to

Model: the packaged all-MiniLM-L6-v2 with a 77-label head (Banking77's labels; speed does not depend on
trained weights), registered and promoted in a temporary registry. Texts: Banking77 test texts, one per
request. Load: each server in its own process on loopback; an asyncio load generator (aiohttp on uvloop, the cheapest
client at hand: on 2 cores every cycle it spends is taken from the server it measures) in this one.
  1. capacity: closed loop, 32 requests in flight, req/s
  2. latency: open loop at 25 %, 50 % and 90 % of each server's own capacity, each request timed from its
     scheduled send time (so a server that falls behind is charged for the queueing it causes)
Writes benchmarks/results/serve_throughput.json.
Targets (2 cores): gradus >= 3x naive req/s; gradus >= 75 % of raw texts/s; p99 <= 100 ms at 50 %; 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cli.processes import free_port, start_until_ready

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "banking77"
RESULTS = ROOT / "benchmarks" / "results" / "serve_throughput.json"
CONCURRENCY = 32
OPEN_LOOP_CONNECTIONS = 256
LOADS = (0.25, 0.5, 0.9)

NAIVE_APP = textwrap.dedent('''
    import sys
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import pipeline

    classify = pipeline("text-classification", model=sys.argv[1], device="cpu")
    app = FastAPI()

    class Body(BaseModel):
        texts: list[str]

    @app.post("/v1/predict")
    def predict(body: Body):
        return {"predictions": classify(body.texts)}

    @app.get("/v2/health/ready")
    def ready():
        return {"ready": True}

    if __name__ == "__main__":
        import uvicorn
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
''')


def env() -> dict[str, str]:
    return {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def build_model(work: Path, labels: list[str]) -> Path:
    """The packaged MiniLM with a fresh classification head, saved as a model folder (safetensors)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from gradus.modeling import resolve_base, save_label_map

    base = resolve_base("packaged").location
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={v: i for i, v in enumerate(labels)})
    out = work / "model"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    save_label_map(out, labels)
    (out / "training_summary.json").write_text(json.dumps({"max_length": 64}))
    return out


def gradus_project(work: Path, model: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A project folder whose registry holds the model as champion, and its params.yaml."""
    from gradus.registry.versions import open_registry

    project = work / "project"
    project.mkdir()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["serving"] |= {"prediction_log": {**raw["serving"]["prediction_log"], "uri": str(project / "predictions")},
                       "feedback": str(project / "feedback"), "shutdown_delay_s": 0} | (overrides or {})
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    registry = open_registry(str(project / "registry"), cache=project / "cache")
    lineage = {"params": {"train": {"max_length": 64}}, "base_model": {"name": "packaged"}, "benchmark": True}
    manifest, _ = registry.register(model, lineage, {}, {"passed": True, "reasons": []}, run="benchmark")
    registry.promote(manifest["version"], run="benchmark", reason="serve benchmark")
    return project


def start(command: list[str], port: int, cwd: Path, log: Path) -> subprocess.Popen:
    return start_until_ready(command, f"http://127.0.0.1:{port}/v2/health/ready", log, timeout=180, env=env(),
                             cwd=cwd)


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


async def closed_loop(url: str, texts: list[str], seconds: float) -> dict[str, Any]:
    """CONCURRENCY requests in flight for `seconds`: capacity in req/s."""
    import aiohttp

    done, errors, latencies = 0, 0, []
    stop_at = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        async def worker(offset: int) -> None:
            nonlocal done, errors
            i = offset
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                async with session.post(url, json={"texts": [texts[i % len(texts)]]}) as response:
                    await response.read()
                    errors += response.status != 200
                latencies.append(time.perf_counter() - start)
                done += 1
                i += CONCURRENCY

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return {"requests": done, "errors": errors, "req_per_s": round(done / elapsed, 2),
            "p50_ms": _ms(latencies, 50), "p99_ms": _ms(latencies, 99)}


async def open_loop(url: str, texts: list[str], rate: float, seconds: float) -> dict[str, Any]:
    """Requests sent at a fixed rate whatever the answers do; latency counted from each scheduled send."""
    import aiohttp

    count = max(int(rate * seconds), 1)
    latencies, errors = [], 0
    # Connections are reused (at most OPEN_LOOP_CONNECTIONS); a request waiting for one is still timed from its
    # scheduled send, so the pool never hides a server's queueing.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=OPEN_LOOP_CONNECTIONS),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        origin = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            nonlocal errors
            scheduled = origin + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                async with session.post(url, json={"texts": [texts[i % len(texts)]]}) as response:
                    await response.read()
                    errors += response.status != 200
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - scheduled)

        await asyncio.gather(*(one(i) for i in range(count)))
    return {"rate_req_per_s": round(rate, 2), "requests": count, "errors": errors, "p50_ms": _ms(latencies, 50),
            "p95_ms": _ms(latencies, 95), "p99_ms": _ms(latencies, 99)}


def _ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else float("nan")


def run(coroutine: Any) -> Any:
    """One load phase on uvloop, with this process's garbage collector paused (its pauses would be charged to
    the server's latency)."""
    import gc

    import uvloop

    gc.collect()
    gc.disable()
    try:
        return uvloop.run(coroutine)
    finally:
        gc.enable()


def measure_server(name: str, url: str, texts: list[str], seconds: float) -> dict[str, Any]:
    run(closed_loop(url, texts, min(seconds, 3)))  # warm-up
    capacity = run(closed_loop(url, texts, seconds))
    loads = {f"{int(share * 100)}%": run(open_loop(url, texts, capacity["req_per_s"] * share, seconds))
             for share in LOADS}
    print(name, json.dumps(capacity), json.dumps(loads), flush=True)
    return {"capacity_concurrency_32": capacity, "open_loop": loads}


def raw_model(model_dir: Path, texts: list[str], seconds: float, threads: int, lanes: int) -> dict[str, Any]:
    """LoadedModel.predict on pre-made batches of 32, the same precision choice as the service, with `lanes`
    passes at once on `threads` torch threads each."""
    import torch

    from gradus.compression import texts_per_second
    from gradus.modeling import load_classifier

    torch.set_num_threads(threads)
    model = load_classifier(model_dir, "cpu")
    speed = texts_per_second(model, texts[: len(texts) // 32 * 32], 32, seconds, lanes)
    return {"texts_per_s": round(speed, 2), "bf16": model.bf16, "threads": threads, "lanes": lanes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3-second phases instead of 15")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="serving.max_wait_ms for gradus "
                        "(default: params.yaml's)")
    parser.add_argument("--threads", type=int, default=None, help="serving.threads for gradus")
    parser.add_argument("--lanes", type=int, default=None, help="serving.lanes for gradus")
    parser.add_argument("--max-batch-size", type=int, default=None, help="serving.max_batch_size for gradus")
    parser.add_argument("--skip-naive", action="store_true", help="gradus and raw only (for tuning)")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else 15.0
    test = pd.read_csv(DATA / "test.csv")
    texts = test["text"].sample(frac=1.0, random_state=0).tolist()
    labels = sorted(test["category"].unique())
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gradus-serve-bench-") as scratch:
        work = Path(scratch)
        model = build_model(work, labels)
        from serving.batching import service_lanes, service_threads

        lanes = service_lanes(args.lanes or 0, "cpu")  # what `gradus serve` uses
        threads = service_threads(args.threads or 0, lanes)
        results["raw_one_pass"] = raw_model(model, texts, seconds, os.cpu_count() or 1, 1)
        before = raw_model(model, texts, seconds, threads, lanes)
        overrides = {key: value for key, value in (("max_wait_ms", args.max_wait_ms), ("threads", args.threads),
                                                   ("lanes", args.lanes), ("max_batch_size", args.max_batch_size))
                     if value is not None}
        project = gradus_project(work, model, overrides)
        gradus_port, naive_port = free_port(), free_port()
        server = start([str(Path(sys.executable).parent / "gradus"), "serve", "--port", str(gradus_port),
                        "--params", str(project / "params.yaml")], gradus_port, project, work / "gradus.log")
        try:
            results["gradus"] = measure_server("gradus", f"http://127.0.0.1:{gradus_port}/v1/predict", texts, seconds)
        finally:
            stop(server)
        after = raw_model(model, texts, seconds, threads, lanes)
        results["raw_lanes"] = {**before, "texts_per_s": round((before["texts_per_s"] + after["texts_per_s"]) / 2, 2),
                                "before_and_after": [before["texts_per_s"], after["texts_per_s"]]}
        results["raw"] = max(results["raw_one_pass"], results["raw_lanes"], key=lambda r: r["texts_per_s"])
        print("raw", results["raw_one_pass"], results["raw_lanes"], flush=True)
        if args.skip_naive:
            return
        (work / "naive.py").write_text(NAIVE_APP)
        server = start([sys.executable, str(work / "naive.py"), str(model), str(naive_port)], naive_port, work,
                       work / "naive.log")
        try:
            results["naive"] = measure_server("naive", f"http://127.0.0.1:{naive_port}/v1/predict", texts, seconds)
        finally:
            stop(server)
        shutil.rmtree(project / "predictions", ignore_errors=True)
    gradus_rps = results["gradus"]["capacity_concurrency_32"]["req_per_s"]
    naive_rps = results["naive"]["capacity_concurrency_32"]["req_per_s"]
    errors = sum(v["errors"] for r in ("gradus", "naive") for v in results[r]["open_loop"].values())
    summary = {
        "gradus_over_naive_req_per_s": round(gradus_rps / naive_rps, 2),
        "gradus_over_raw_texts_per_s": round(gradus_rps / results["raw"]["texts_per_s"], 3),
        "gradus_over_raw_one_pass": round(gradus_rps / results["raw_one_pass"]["texts_per_s"], 3),
        "gradus_over_raw_lanes": round(gradus_rps / results["raw_lanes"]["texts_per_s"], 3),
        "gradus_p99_ms_at_50pct": results["gradus"]["open_loop"]["50%"]["p99_ms"],
        "errors_gradus": sum(v["errors"] for v in results["gradus"]["open_loop"].values())
        + results["gradus"]["capacity_concurrency_32"]["errors"],
        "errors_all": errors,
    }
    summary["targets_met"] = {"3x_naive": summary["gradus_over_naive_req_per_s"] >= 3,
                              "75pct_of_raw": summary["gradus_over_raw_texts_per_s"] >= 0.75,
                              "p99_le_100ms_at_50pct": summary["gradus_p99_ms_at_50pct"] <= 100,
                              "zero_errors": summary["errors_gradus"] == 0}
    output = {"benchmark": "serve_throughput", "quick": args.quick, "phase_seconds": seconds,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "concurrency": CONCURRENCY,
              "texts": len(texts), **results, "summary": summary}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(output, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
