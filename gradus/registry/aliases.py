"""Aliases (champion, candidate, previous, shadow, canary): the whole map is one record per generation,
`aliases/<generation>.json`, and a change is a create-if-absent of generation N+1. Two concurrent changes
from generation N: exactly one wins, the other gets a ConflictError; both outcomes go to the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gradus.errors import ConflictError, IntegrityError, RegistryError
from gradus.registry.audit import AuditLog, actor, now_utc
from gradus.registry.store import Store, failpoint

# Version-valued aliases. `shadow`: a version that gets a copy of live traffic (answers logged, never returned).
ALIASES = ("champion", "candidate", "previous", "shadow")


@dataclass(frozen=True)
class AliasState:
    """The alias map after `generation` changes (0: nothing ever set)."""

    generation: int = 0
    champion: str | None = None
    candidate: str | None = None
    previous: str | None = None
    shadow: str | None = None
    canary: dict[str, Any] | None = None  # {"version": id, "weight": 0..1} for gradual release
    change: dict[str, Any] = field(default_factory=dict)

    def mapping(self) -> dict[str, Any]:
        return {"champion": self.champion, "candidate": self.candidate, "previous": self.previous,
                "shadow": self.shadow, "canary": self.canary}

    def names_for(self, version: str) -> list[str]:
        names = [name for name in ALIASES if getattr(self, name) == version]
        if self.canary and self.canary.get("version") == version:
            names.append(f"canary({self.canary['weight']:g})")
        return names



def alias_targets(aliases: dict[str, Any]) -> dict[str, str | None]:
    """The version each alias of an alias map names (the canary's is inside its record)."""
    return {name: aliases.get(name) for name in ALIASES} | {"canary": (aliases.get("canary") or {}).get("version")}

class AliasBook:
    """Reads the latest alias record; writes the next one by compare-and-swap."""

    PREFIX = "aliases/"

    def __init__(self, store: Store, audit: AuditLog, vouches: Callable[[str], bool]) -> None:
        self.store = store
        self.audit = audit
        self.vouches = vouches  # may an alias point at this version? (exists, manifest matches its record)

    def state(self) -> AliasState:
        keys = self.store.keys(self.PREFIX)
        if not keys:
            return AliasState()
        data = self.store.read(keys[-1])
        if data is None:  # pragma: no cover - written once, never deleted
            raise RegistryError(f"{self.store.location}/{keys[-1]} vanished")
        try:
            record = json.loads(data)
            values = {name: record["aliases"].get(name) for name in (*ALIASES, "canary")}
            return AliasState(generation=int(record["generation"]), change=record.get("change", {}), **values)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{keys[-1]}: the alias record is damaged ({type(exc).__name__}: {exc})") from None

    def update(self, change: Callable[[AliasState], dict[str, Any]], *, action: str, run: str,
               reason: str, expected_generation: int | None = None) -> AliasState:
        """Apply `change` (current state -> new alias values) as generation N+1, only if N is still the
        latest. Losing that race raises ConflictError; both outcomes go to the audit log."""
        current = self.state()
        base = current.generation if expected_generation is None else expected_generation
        new = {**current.mapping(), **change(current)}
        unchanged = alias_targets(current.mapping())
        for name, target in alias_targets(new).items():
            # A new target is checked, and so is the canary at every change: each one sends it more traffic.
            if target is not None and (target != unchanged[name] or name == "canary") and not self.vouches(target):
                raise IntegrityError(f"cannot point {name} at {target}: no such version, or its manifest does not "
                                     "match its registration record (`gradus models verify " + target + "`)")
        if new == current.mapping() and base == current.generation:
            return current  # nothing to change (a retried run)
        record = {"generation": base + 1, "aliases": new,
                  "change": {"action": action, "run": run, "reason": reason, "at": now_utc(), "by": actor(),
                             "before": current.mapping(), "after": new}}
        failpoint("aliases:before-write")
        won = base == current.generation and self.store.create(
            f"{self.PREFIX}{base + 1:012d}.json", json.dumps(record, indent=2, sort_keys=True).encode())
        if not won:
            self._refuse(action, run, reason, base, new)
        self.audit.append(action, run=run, reason=reason, outcome="ok",
                          details={"generation": base + 1, "before": current.mapping(), "after": new})
        return self.state()

    def _refuse(self, action: str, run: str, reason: str, base: int, wanted: dict[str, Any]) -> None:
        latest = self.state()
        self.audit.append(action, run=run, reason=reason, outcome="conflict",
                          details={"expected_generation": base, "latest_generation": latest.generation,
                                   "wanted": wanted})
        by = latest.change.get("run") or "another run"
        if base > latest.generation:
            raise ConflictError(f"expected generation {base}, but the registry is only at generation "
                                f"{latest.generation}; nothing was changed — read the current one with "
                                "`gradus models list` and pass that")
        raise ConflictError(
            f"aliases changed concurrently: expected generation {base}, the registry is at generation "
            f"{latest.generation} (last change: {latest.change.get('action')} by {by}); "
            "nothing was changed — re-read with `gradus models list` and retry")
