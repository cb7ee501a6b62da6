"""Clusters recorded in run manifests (the "cloud" section of kohyagen.json), and the
status and down commands that find them again later, from any shell.

A cluster is recorded *before* it is launched (skypilot-facts.md §5: a deterministic
name written first), so that a kohyagen killed mid-launch still leaves the name behind
for `kohyagen cloud down`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kohyagen.cloud.sky_api import ClusterInfo, SkyApi
from kohyagen.errors import UsageError
from kohyagen.run.manifest import MANIFEST_NAME, Manifest, now

SECTION = "cloud"
PREFIX = "kohyagen-"
# Recorded states: planned (dry run), launching, running, copying, down, down_failed,
# submitted (a managed job), fetched (its results copied back by `cloud fetch`).
LIVE_STATES = ("launching", "running", "copying", "down_failed")


def note(manifest: Manifest, **values: Any) -> None:
    """Update the run's cloud record (saved at once, atomically)."""
    manifest.update(SECTION, **values, updated=now())


def recorded(manifest: Manifest) -> dict[str, Any]:
    return dict(manifest.data.get(SECTION) or {})


def find_runs(roots: list[Path]) -> list[Manifest]:
    """Run folders with a cloud record: each root itself, or the run folders inside it."""
    found: dict[Path, Manifest] = {}
    for root in roots:
        root = Path(root)
        candidates = [root] if (root / MANIFEST_NAME).is_file() else sorted(root.glob("*/"))
        for folder in candidates:
            if not (folder / MANIFEST_NAME).is_file():
                continue
            manifest = Manifest.load(folder)
            if manifest is not None and recorded(manifest).get("cluster"):
                found[manifest.run_dir] = manifest
    return list(found.values())


@dataclass(frozen=True)
class StatusRow:
    cluster: str
    run_dir: str | None  # None: a kohyagen-* cluster no run folder here records
    recorded: str | None  # what the manifest says
    live: str | None  # what SkyPilot says now; None: no such cluster (not billing)
    resources: str
    autostop: int | None
    to_down: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cloud_status(api: SkyApi, roots: list[Path]) -> list[StatusRow]:
    """Every cluster recorded under roots, and every kohyagen-* cluster SkyPilot knows."""
    live = {c.name: c for c in api.status() if c.name.startswith(PREFIX)}
    rows = []
    seen = set()
    for manifest in find_runs(roots):
        record = recorded(manifest)
        cluster = record["cluster"]
        seen.add(cluster)
        rows.append(_row(cluster, str(manifest.run_dir), record.get("status"), live.get(cluster)))
    for name, info in sorted(live.items()):
        if name not in seen:
            rows.append(_row(name, None, None, info))
    return rows


def _row(
    cluster: str, run_dir: str | None, state: str | None, info: ClusterInfo | None
) -> StatusRow:
    return StatusRow(
        cluster,
        run_dir,
        state,
        info.status if info else None,
        info.resources if info else "",
        info.autostop if info else None,
        info.to_down if info else False,
    )


def take_down(api: SkyApi, targets: list[str], roots: list[Path]) -> list[tuple[str, bool]]:
    """Terminate clusters: each target a cluster name, a run name or a run folder; no
    target: every kohyagen cluster that is up. (cluster, existed) per cluster."""
    rows = cloud_status(api, roots)
    if targets:
        clusters = [_resolve(t, rows) for t in targets]
    else:
        clusters = [r.cluster for r in rows if r.live is not None]
    done = []
    for cluster in dict.fromkeys(clusters):
        existed = api.down(cluster)
        done.append((cluster, existed))
        for manifest in find_runs(roots):
            if recorded(manifest).get("cluster") == cluster:
                note(manifest, status="down")
    return done


def _resolve(target: str, rows: list[StatusRow]) -> str:
    for row in rows:
        if target == row.cluster:
            return row.cluster
    path = Path(target)
    for row in rows:
        if row.run_dir and (
            (path.exists() and path.resolve() == Path(row.run_dir))
            or Path(row.run_dir).name == target
        ):
            return row.cluster
    if target.startswith(PREFIX):
        return target  # not recorded here, maybe still known to SkyPilot: try it
    raise UsageError(
        f"no cluster recorded for {target!r}",
        hint="pass a cluster name from `kohyagen cloud status`, a run name or a run folder "
        "(run folders are looked for in runs/ unless --runs says otherwise)",
    )
