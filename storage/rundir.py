"""The run directory: its saved config, its run id, the check that a rerun is the same run, what a resume
keeps (damaged shards quarantined), and reading and writing its files, whether run_dir is a local path or a
URI (file://, s3://, gs://, ...)."""

from __future__ import annotations

import json
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from analysis.errors import ConfigError
from storage.traces import QUARANTINE, DamagedShardError, SampleSet, done_samples, filesystem, traces_dir

if TYPE_CHECKING:  # a sampling job writes no figure: matplotlib loads only where one is written
    from matplotlib.figure import Figure

QUARANTINE_LOG = "quarantine.log"  # beside the quarantined shards: one line per shard moved there
PRECISION = "precision"  # config.yaml's record of what the replicas ran: {dtype, isa}, each value they reported

# Keys a rerun may change without changing what any finished sample is (the engine too: a run begun in-process
# may go on through a server of the same model); and the machine's own: a run resumed on another CPU may
# resolve model.dtype=auto otherwise (its `precision` section then lists both).
RESUMABLE_KEYS = ("sampling.n", "sampling.top_k_branches", "dataset.limit", "dataset.size", "replicas", "cluster", "engine",
                  "tracking", "run_dir", "answer", "model.dtype", PRECISION)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def read_text(uri: str) -> str | None:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read().decode()
    except FileNotFoundError:
        return None


def write_text(uri: str, text: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(text.encode())


def read_table(folder: str, name: str, columns: Optional[list[str]]) -> Optional[pa.Table]:
    """The Parquet file `<folder>/<name>` (`columns`, or all), or None when there is none."""
    fs, root = filesystem(folder)
    if fs.get_file_info(f"{root}/{name}").type != pafs.FileType.File:
        return None
    return pq.read_table(f"{root}/{name}", columns=columns, filesystem=fs)


def write_table(table: pa.Table, folder: str, name: str) -> str:
    """Write `table` as `<folder>/<name>` (zstd Parquet); returns that path."""
    fs, root = filesystem(folder)
    fs.create_dir(root, recursive=True)
    pq.write_table(table, f"{root}/{name}", filesystem=fs, compression="zstd")
    return f"{folder}/{name}"


def write_figure(fig: Figure, folder: str, name: str) -> str:
    """Save `fig` as `<folder>/<name>`: directly when local, through a staging file when `folder` is a URI.
    Returns that path."""
    from analysis.plots import save_figure

    if "://" not in folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return str(save_figure(fig, Path(folder) / name))
    fs, root = filesystem(folder)
    with tempfile.TemporaryDirectory() as staging:
        local = save_figure(fig, Path(staging) / name)
        fs.create_dir(root, recursive=True)
        pafs.copy_files(str(local), f"{root}/{name}", destination_filesystem=fs)
    return f"{folder}/{name}"


def prepare(run_dir: str, config: dict[str, Any]) -> str:
    """Save the resolved config in run_dir and return the run id; a rerun must sample the same way."""
    saved_text = read_text(f"{run_dir}/config.yaml")
    run_text = read_text(f"{run_dir}/run.json")
    kept = None
    if saved_text is not None and run_text is not None:
        saved_tree = yaml.safe_load(saved_text) or {}
        kept = saved_tree.get(PRECISION)
        saved, now = flatten(saved_tree), flatten(config)
        changed = sorted(
            k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k) and not k.startswith(RESUMABLE_KEYS)
        )
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
            raise ConfigError(f"run_dir={run_dir} holds a run with a different config ({diffs}); use another run_dir")
        run_id = json.loads(run_text)["run_id"]
    else:
        run_id = uuid.uuid4().hex[:12]
        write_text(f"{run_dir}/run.json", json.dumps({"run_id": run_id}))
    write_text(f"{run_dir}/config.yaml", yaml.safe_dump({**config, **({PRECISION: kept} if kept else {})}, sort_keys=False))
    return run_id


def record_precision(run_dir: str, report: dict[str, Any]) -> None:
    """Add a replica's dtype and ISA to config.yaml's `precision` section (comma-joined when replicas or resumes
    differ)."""
    config = saved_config(run_dir) or {}
    section = dict(config.get(PRECISION) or {})
    for key in ("dtype", "isa"):
        values = set(filter(None, str(section.get(key, "")).split(","))) | {str(report[key])}
        section[key] = ",".join(sorted(values))
    write_text(f"{run_dir}/config.yaml", yaml.safe_dump({**config, PRECISION: section}, sort_keys=False))


def run_id(run_dir: str) -> Optional[str]:
    """The run id a sampled run_dir holds (run.json; every trace row carries it), or None."""
    text = read_text(f"{run_dir}/run.json")
    return json.loads(text)["run_id"] if text is not None else None


def saved_config(run_dir: str) -> dict[str, Any] | None:
    """The resolved config a run saved, if any."""
    text = read_text(f"{run_dir}/config.yaml")
    return yaml.safe_load(text) if text is not None else None


def resume_scan(run_dir: str) -> tuple[dict[str, SampleSet], list[DamagedShardError]]:
    """What a resume keeps: the samples of every shard read whole. A shard that cannot be is moved to
    `traces/.quarantine/<name>` with a line in its log there, so its samples count as missing."""
    damaged: list[DamagedShardError] = []
    fs, root = filesystem(traces_dir(run_dir))
    log = f"{traces_dir(run_dir)}/{QUARANTINE}/{QUARANTINE_LOG}"

    def quarantine(error: DamagedShardError) -> None:
        name = error.path.rsplit("/", 1)[-1]
        fs.create_dir(f"{root}/{QUARANTINE}", recursive=True)
        fs.move(error.path, f"{root}/{QUARANTINE}/{name}")  # replaces an earlier quarantined copy of the same unit
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_text(log, (read_text(log) or "") + f"{stamp} {name}: {error.reason}\n")  # object stores cannot append
        damaged.append(error)

    return done_samples(run_dir, quarantine), damaged
