"""Release analysis: champion vs candidate over one window of live traffic, as checks a release step passes or
fails. Inputs are what the service leaves behind: its prediction log (both models' answers to the same texts,
paired by request id: shadow copies and the champion's copies of canary requests), its Prometheus counters
(errors per version) and users' feedback. No Prefect here; flows/release.py moves the steps.

Hand-written because no well-kept library judges a canary on the model's answers: Flagger, Argo Rollouts and
KServe compare error rates and latencies only, and need a mesh or Prometheus queries to do even that.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gradus import storage
from gradus.config.operations import PREDICTION_LOG_COLUMNS, ReleaseConfig
from gradus.scoring import mean_interval, z_value
from gradus.task_types.base import DEFAULT_TASK, Agreement
from gradus.task_types.seam import task_type
from gradus.telemetry import ALIAS_GENERATION, MODEL_INFO, REQUESTS, SHADOW_ANSWERS, total

SHADOW = "shadow"  # the prediction log's alias for a copy that was computed but never returned
INFERENCE_ROUTES = ("/v1/predict", "/v2/models/{name}/infer")
Status = Literal["pass", "fail", "pending"]


@dataclass(frozen=True)
class Check:
    """One comparison: its measured value, the limit it is held to, and the verdict."""

    name: str
    status: Status
    value: float | None
    limit: str
    detail: str
    required: bool = True  # pending required checks keep a step from completing; optional ones do not

    def row(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ statistics


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion: honest at small n and at 0 or n successes, unlike p ± z·se."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def js_divergence(left: Counter[str], right: Counter[str]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two label distributions given as counts."""
    from scipy.spatial.distance import jensenshannon

    labels = sorted(set(left) | set(right))
    p = np.array([left[label] for label in labels], dtype=float)
    q = np.array([right[label] for label in labels], dtype=float)
    if not p.sum() or not q.sum():
        return 0.0
    return float(jensenshannon(p, q, base=2) ** 2)  # scipy gives the distance, the divergence's square root


# ------------------------------------------------------------------------------------------ inputs


def _rows_since(location: str, required: list[str], columns: list[str], since: datetime,
                endpoint_url: str | None, root: Path, fix: str) -> pd.DataFrame:
    """`columns` of every table at a location (none yet: no rows), rows stamped at or after `since`."""
    tables = storage.read_tables_if_any(location, columns=required, endpoint_url=endpoint_url, root=root, fix=fix)
    if not tables:
        return pd.DataFrame(columns=columns)
    frame = pd.concat([t.frame.reindex(columns=columns) for t in tables], ignore_index=True)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return frame[frame["time"] >= pd.Timestamp(since)].reset_index(drop=True)


def read_log(location: str, since: datetime, endpoint_url: str | None, root: Path) -> pd.DataFrame:
    """The prediction log's rows written at or after `since` (empty before the service wrote any)."""
    columns = list(PREDICTION_LOG_COLUMNS)
    return _rows_since(location, columns, columns, since, endpoint_url, root,
                       "is serving.prediction_log the service's log?")


def read_feedback(location: str, since: datetime, endpoint_url: str | None, root: Path) -> pd.DataFrame:
    """Feedback given at or after `since` for a request id (the only way to pair it with both answers);
    `location` is what ServingConfig.feedback_files() names."""
    frame = _rows_since(location, ["text", "label"], ["time", "request_id", "text", "label"], since, endpoint_url,
                        root, "is serving.feedback the service's feedback folder?")
    return frame[frame["request_id"].notna()].reset_index(drop=True)


def parse_counters(text: str) -> dict[tuple[str, ...], float]:
    """The service's /metrics counters the analysis needs, keyed ("requests", alias, version, status) and
    ("shadow", version, outcome)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == total(REQUESTS) and labels.get("route") in INFERENCE_ROUTES:
                key: tuple[str, ...] = ("requests", labels["alias"], labels["version"], labels["status"])
            elif sample.name == total(SHADOW_ANSWERS):
                key = ("shadow", labels["version"], labels["outcome"])

            else:
                continue
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def served_versions(text: str) -> tuple[int, dict[str, str]]:
    """The alias generation the service follows and {alias: version} it serves, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    generation, served = -1, {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == ALIAS_GENERATION:
                generation = int(sample.value)
            elif sample.name == MODEL_INFO and sample.value:
                served[sample.labels["alias"]] = sample.labels["version"]
    return generation, served


@dataclass
class CounterWindow:
    """Increases of counters since a start, across service restarts (a counter that went down was reset: its
    new value is all increase), as Prometheus' increase() treats resets."""

    last: dict[tuple[str, ...], float] = field(default_factory=dict)
    total: dict[tuple[str, ...], float] = field(default_factory=dict)
    started: bool = False

    def observe(self, counts: dict[tuple[str, ...], float]) -> None:
        if self.started:
            for key, value in counts.items():
                before = self.last.get(key, 0.0)
                self.total[key] = self.total.get(key, 0.0) + (value - before if value >= before else value)
        self.last, self.started = dict(counts), True

    def errors(self, version: str, aliases: tuple[str, ...]) -> tuple[int, int]:
        """(failed, total) inference answers of `version` under `aliases` (shadow: its copies) in the window;
        failures are 5xx answers and shadow copies that raised (a 4xx is the client's fault, not the model's)."""
        failed = total = 0.0
        for key, value in self.total.items():
            if key[0] == "requests" and key[1] in aliases and key[2] == version and not key[3].startswith("4"):
                total += value
                failed += value if key[3].startswith("5") else 0.0
            elif key[0] == "shadow" and SHADOW in aliases and key[1] == version and key[2] in ("ok", "failed"):
                total += value
                failed += value if key[2] == "failed" else 0.0
        return int(failed), int(total)


# ------------------------------------------------------------------------------------------ analysis


def pairs(log: pd.DataFrame, champion: str, candidate: str) -> pd.DataFrame:
    """Both models' answers to the same texts (request id + text), one row per text."""
    both = log[log["version"].isin([champion, candidate])]
    both = both.drop_duplicates(["request_id", "text", "version"])
    wide = both.pivot(index=["request_id", "text"], columns="version", values=["predicted_label", "confidence"])
    if champion not in wide.columns.get_level_values(1) or candidate not in wide.columns.get_level_values(1):
        return pd.DataFrame(columns=["request_id", "text", "champion", "candidate", "champion_conf",
                                     "candidate_conf"])
    out = pd.DataFrame({"champion": wide[("predicted_label", champion)],
                        "candidate": wide[("predicted_label", candidate)],
                        "champion_conf": wide[("confidence", champion)],
                        "candidate_conf": wide[("confidence", candidate)]}).dropna().reset_index()
    return out


def candidate_answers(log: pd.DataFrame, candidate: str) -> int:
    """Texts the candidate answered in the window (served on the canary, or as the shadow)."""
    return int((log["version"] == candidate).sum())


def analyze(log: pd.DataFrame, feedback: pd.DataFrame, counters: CounterWindow, champion: str, candidate: str,
            cfg: ReleaseConfig, task: str = DEFAULT_TASK) -> list[Check]:
    """Every check of one analysis of a step's window (answers compared as their task type compares them)."""
    z = z_value(cfg.confidence)
    paired = pairs(log, champion, candidate)
    return [error_check(counters, champion, candidate, cfg, z), latency_check(log, champion, candidate, cfg),
            *agreement_checks(paired, cfg, z, task), accuracy_check(paired, feedback, cfg, z, task)]


def error_check(counters: CounterWindow, champion: str, candidate: str, cfg: ReleaseConfig, z: float) -> Check:
    """Fails when the candidate's error rate is above the champion's beyond both intervals (Wilson)."""
    bad, n = counters.errors(candidate, ("canary", SHADOW))
    base_bad, base_n = counters.errors(champion, ("champion",))
    low = wilson(bad, n, z)[0]
    base_high = wilson(base_bad, base_n, z)[1]
    detail = f"candidate {bad}/{n} failed, champion {base_bad}/{base_n}"
    if n < cfg.min_samples and not (n and low > base_high):
        return Check("error rate", "pending", None, "candidate lower bound <= champion upper bound",
                     detail + f" (waiting for {cfg.min_samples} candidate answers)")
    status: Status = "fail" if low > base_high else "pass"
    return Check("error rate", status, round(bad / max(n, 1), 4),
                 f"lower bound {low:.4f} <= champion upper bound {base_high:.4f}", detail)


def latency_check(log: pd.DataFrame, champion: str, candidate: str, cfg: ReleaseConfig) -> Check:
    """Fails when the candidate's p99 is above champion p99 × factor and above it by the slack."""
    mine = log.loc[log["version"] == candidate, "latency_ms"].astype(float)
    theirs = log.loc[(log["version"] == champion) & (log["alias"] != SHADOW), "latency_ms"].astype(float)
    if len(mine) < cfg.min_samples or len(theirs) < cfg.min_samples:
        return Check("p99 latency", "pending", None, f"<= champion p99 x {cfg.latency_p99_factor:g}",
                     f"{len(mine)} candidate / {len(theirs)} champion answers; waiting for {cfg.min_samples} each")
    p99, base = float(np.percentile(mine, 99)), float(np.percentile(theirs, 99))
    limit = max(base * cfg.latency_p99_factor, base + cfg.latency_slack_ms)
    return Check("p99 latency", "fail" if p99 > limit else "pass", round(p99, 2), f"<= {limit:.1f} ms",
                 f"candidate p99 {p99:.1f} ms, champion p99 {base:.1f} ms")


def agreement_checks(paired: pd.DataFrame, cfg: ReleaseConfig, z: float, task: str = DEFAULT_TASK) -> list[Check]:
    """On the same texts: agreement as the task type measures it (a Wilson lower bound for a share of texts, a
    normal one for a mean), predicted-label distribution divergence, confidence drop."""
    n = len(paired)
    kind = task_type(task)
    measures = kind.agreements(list(paired["champion"]), list(paired["candidate"]))
    names = (*(m.name for m in measures), "label divergence (JS)", "confidence drop")
    limits = (*(f"lower bound >= {getattr(cfg, m.limit):g}" for m in measures), f"<= {cfg.max_label_js:g}",
              f"<= {cfg.max_confidence_drop:g}")
    if n < cfg.min_samples:
        return [Check(name, "pending", None, limit, f"{n} paired texts; waiting for {cfg.min_samples}")
                for name, limit in zip(names, limits, strict=True)]
    checks = [agreement_check(measure, getattr(cfg, measure.limit), limit, z)
              for measure, limit in zip(measures, limits, strict=False)]
    js = js_divergence(kind.frequencies(paired["champion"]), kind.frequencies(paired["candidate"]))
    drop = float(paired["champion_conf"].astype(float).mean() - paired["candidate_conf"].astype(float).mean())
    return [
        *checks,
        Check(names[-2], "pass" if js <= cfg.max_label_js else "fail", round(js, 4), limits[-2],
              f"predicted-label distributions on {n} paired texts"),
        Check(names[-1], "pass" if drop <= cfg.max_confidence_drop else "fail", round(drop, 4), limits[-1],
              f"mean confidence champion {paired['champion_conf'].astype(float).mean():.3f}, candidate "
              f"{paired['candidate_conf'].astype(float).mean():.3f}"),
    ]


def agreement_check(measure: Agreement, floor: float, limit: str, z: float) -> Check:
    """One agreement measure: fails when its interval's lower bound is below the floor."""
    n = len(measure.values)
    if measure.binary:
        agree = round(float(measure.values.sum()))
        low, high = wilson(agree, n, z)
        value, detail = agree / n, f"{agree}/{n} texts agree"
    else:
        value, low, high = mean_interval(measure.values, z)
        detail = f"mean {value:.3f} over {n} texts"
    return Check(measure.name, "pass" if low >= floor else "fail", round(value, 4), limit,
                 f"{detail}; interval {max(low, 0.0):.3f}-{min(high, 1.0):.3f}")


def accuracy_check(paired: pd.DataFrame, feedback: pd.DataFrame, cfg: ReleaseConfig, z: float,
                   task: str = DEFAULT_TASK) -> Check:
    """With enough labels on paired texts: candidate minus champion in the task type's primary metric, paired,
    with an interval; fails when even its upper end is below -max_accuracy_drop (the candidate is worse, and not
    by chance)."""
    limit = f"upper bound >= -{cfg.max_accuracy_drop:g}"
    labels = feedback.drop_duplicates(["request_id", "text"], keep="last")[["request_id", "text", "label"]]
    labeled = paired.merge(labels, on=["request_id", "text"], how="inner")
    n = len(labeled)
    kind = task_type(task)
    name = f"online {kind.online_metric_name}"
    if n < cfg.min_feedback:
        return Check(name, "pending", None, limit,
                     f"{n} labeled paired texts; judged from {cfg.min_feedback}", required=False)
    score = kind.online_score(list(labeled["label"]), list(labeled["candidate"]), list(labeled["champion"]),
                              cfg.confidence, 0)
    return Check(name, "fail" if score.high < -cfg.max_accuracy_drop else "pass", round(score.difference, 4),
                 limit, f"candidate {score.candidate:.3f} vs champion {score.champion:.3f} on {n} labeled texts; "
                 f"difference {score.difference:+.3f} ({score.low:+.3f} to {score.high:+.3f}; {score.method})",
                 required=False)


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == "fail"]


def conclusive(checks: list[Check]) -> bool:
    """Every required check has been judged (none pending)."""
    return all(c.status != "pending" for c in checks if c.required)


def reasons(checks: list[Check]) -> str:
    return "; ".join(f"{c.name} {c.value} (limit {c.limit}: {c.detail})" for c in failed(checks))
