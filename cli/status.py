"""`gradus status`: one screen of what runs where — served versions and traffic weights, the last training and
its gate verdict, the last drift verdict, and the live service's req/s, error rate and p99 (from /metrics)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from cli.common import table
from gradus import telemetry as names
from gradus.monitoring.records import MonitorRecords
from gradus.telemetry import bucket, total

PREDICT_ROUTES = ("/v1/predict", "/v2/models/{name}/infer")


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of a Prometheus text page, by sample name."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _total(samples: dict[str, Any], name: str, **match: Any) -> float:
    return sum(value for labels, value in samples.get(name, [])
               if all(labels.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in match.items()))


def live_traffic(url: str, window_s: float) -> dict[str, Any]:
    """req/s, 5xx share and p99 over `window_s` seconds, from two scrapes of the service's counters."""
    first = scrape(url)
    started = time.monotonic()
    time.sleep(window_s)
    second = scrape(url)
    elapsed = time.monotonic() - started

    def delta(name: str, **match: Any) -> float:
        return _total(second, name, **match) - _total(first, name, **match)

    requests = delta(total(names.REQUESTS), route=PREDICT_ROUTES)
    errors = sum(delta(total(names.REQUEST_ERRORS), route=PREDICT_ROUTES, status=code)
                 for code in {labels["status"] for labels, _ in second.get(total(names.REQUEST_ERRORS), [])}
                 if code.startswith("5"))
    bounds = sorted({labels["le"] for labels, _ in second.get(bucket(names.REQUEST_LATENCY), [])
                     if labels.get("route") == "/v1/predict"}, key=float)
    counts = [delta(bucket(names.REQUEST_LATENCY), route="/v1/predict", le=le) for le in bounds]
    buckets = [float(le) for le in bounds]
    return {"url": url, "window_s": round(elapsed, 1), "req_per_s": round(requests / elapsed, 2),
            "error_rate": round(errors / requests, 4) if requests else None,
            "p99_ms": _quantile(buckets, counts, 0.99), "ready": _total(second, names.READY) == 1}


def _quantile(bounds: list[float], cumulative: list[float], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile (Prometheus' histogram_quantile, unsmoothed)."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            return None if bound == float("inf") else round(bound * 1000, 1)
    return None


def collect(registry: Any, url: str | None, window_s: float,
            catalogue: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything `gradus status` shows, as data (the --json output); catalogue: the kept data sources."""
    from gradus.task_types.seam import task_of, task_type

    state = registry.aliases()
    versions = registry.versions()
    last = versions[-1] if versions else None
    drift = MonitorRecords(registry.store).latest_drift()
    events = registry.audit_log()  # read once: the release history and the gate verdict both come from it
    report: dict[str, Any] = {
        "registry": registry.store.location,
        "aliases": {"generation": state.generation, "champion": state.champion, "candidate": state.candidate,
                    "previous": state.previous, "canary": state.canary},
        "release": release_state(state, events),
        "last_training": None if last is None else {
            "version": last["version"], "at": last["created_at"], "task": task_of(last),
            **{key: last["metrics"].get(key) for key in task_type(task_of(last)).report_metrics},
            "gate": _verdict(registry, last["version"], events)},
        "last_drift": drift,
        "catalogue": catalogue or [],
        "service": None,
    }
    if url:
        try:
            report["service"] = live_traffic(url, window_s)
        except Exception as exc:  # unreachable: say so, the rest of the screen still stands
            report["service"] = {"url": url, "error": f"{type(exc).__name__}: {exc}"}
    return report


def release_state(state: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The release in progress (from the aliases the release flow moves) and the last one that ended."""
    canary = state.canary or {}
    version = canary.get("version") or state.shadow
    step = f"canary {canary['weight']:.0%}" if canary.get("weight") else ("shadow" if state.shadow else None)
    ended = [e for e in events if e["action"] == "release"]
    last = ended[-1] if ended else None
    return {"version": version, "step": step,
            "last": None if last is None else {k: last.get(k) for k in ("version", "outcome", "reason", "at")}}


def _verdict(registry: Any, version: str, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    verdict = registry.verdict(version, events)
    return None if verdict is None else {"passed": verdict.get("passed"), "reasons": verdict.get("reasons", [])}


def render(report: dict[str, Any]) -> str:
    """The report as one readable screen."""
    from gradus.task_types.base import METRIC_NAMES
    from gradus.task_types.seam import task_type

    aliases = report["aliases"]
    canary = aliases["canary"] or {}
    champion_weight = 1 - float(canary.get("weight", 0)) if canary else 1.0
    rows = [["champion", aliases["champion"] or "-", f"{champion_weight:.0%}" if aliases["champion"] else "-"],
            ["canary", canary.get("version", "-"), f"{canary['weight']:.0%}" if canary else "-"],
            ["candidate", aliases["candidate"] or "-", ""], ["previous", aliases["previous"] or "-", ""]]
    lines = [f"registry  {report['registry']} (alias generation {aliases['generation']})", "",
             table(["ALIAS", "VERSION", "TRAFFIC"], rows), "",
             release_line(report["release"])]
    last = report["last_training"]
    if last:
        gate = last["gate"] or {}
        verdict = {True: "gate passed", False: "gate FAILED", None: "no gate verdict"}[gate.get("passed")]
        figures = ", ".join(f"{METRIC_NAMES.get(key, key)} {last[key]}"
                            for key in task_type(last["task"]).report_metrics)
        lines.append(f"training  {last['version']} registered {_ago(last['at'])}: {figures}, {verdict}"
                     + (f" ({'; '.join(gate['reasons'])[:120]})" if gate.get("reasons") else ""))
    else:
        lines.append("training  no version registered yet")
    drift = report["last_drift"]
    if drift:
        signals = ", ".join(drift.get("drifted_signals") or []) or "none"
        lines.append(f"drift     last run {_ago(drift['at'])} on {drift.get('rows')} rows: drifted signals: {signals}"
                     f"; retrain {'started' if drift.get('retrain') else 'not needed'}")
    else:
        lines.append("drift     the drift monitor has not run yet")
    kept = report.get("catalogue") or []
    lines.append(f"data      {len(kept)} kept source(s) in the data catalogue" + "".join(
        f"\n            {e['location']} ({e['file']}; added {_ago(e['added_at'])} by {e['added_by']})" for e in kept)
        if kept else "data      no kept sources in the data catalogue (params.yaml's data.sources only)")
    service = report["service"]
    if service is None:
        lines.append("service   not asked (--url)")
    elif "error" in service:
        lines.append(f"service   {service['url']} unreachable: {service['error']}")
    else:
        error = "-" if service["error_rate"] is None else f"{service['error_rate']:.2%}"
        p99 = "-" if service["p99_ms"] is None else f"{service['p99_ms']:g} ms"
        lines.append(f"service   {service['url']} {'ready' if service['ready'] else 'NOT READY'}: "
                     f"{service['req_per_s']:g} req/s, 5xx {error}, p99 <= {p99} "
                     f"(over {service['window_s']:g} s)")
    return "\n".join(lines)


def release_line(release: dict[str, Any]) -> str:
    now = (f"{release['version']} at {release['step']}" if release["step"] else "none in progress")
    last = release["last"]
    if last:
        now += f"; last: {last['version']} {last['outcome']} {_ago(last['at'])} ({str(last['reason'])[:100]})"
    return f"release   {now}"


def _ago(stamp: str) -> str:
    then = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    minutes = (datetime.now(UTC) - then).total_seconds() / 60
    return f"{minutes:.0f} min ago" if minutes < 120 else f"{minutes / 60:.1f} h ago"
