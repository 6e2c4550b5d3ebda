"""Import other harnesses' sampled generations as a marginal run: traces/ in the trace schema, streamed.

    python -m jobs.ingest format=lm_eval path=lm-eval-out/ run_dir=runs/imported/lm_eval
    python -m jobs.ingest format=lighteval path=evals/details/ run_dir=runs/imported/lighteval
    python -m jobs.ingest format=nemo_skills path=eval-results/gsm8k/ run_dir=runs/imported/nemo model_name=NAME
    python -m jobs.ingest format=jsonl path=samples.jsonl fields.responses=outputs run_dir=runs/imported/paper

Every job that reads a run then works on it (jobs.aggregate with its adaptive replay, jobs.ensemble,
jobs.export, jobs.compare). The import holds about `shard_rows` samples in memory at once. The source's
files are fingerprinted (size, sha256) into the run's config.yaml: importing them again adds nothing,
other files into the same run_dir are refused. The source's own per-problem numbers go to peer.json;
jobs.aggregate prints them beside marginal's.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow.fs as pafs
from omegaconf import DictConfig

from actors.decodings import SAMPLE
from analysis import peers as peer_lib
from analysis.errors import ConfigError
from jobs import cli
from jobs.config import validate_ingest
from problems.datasets import DatasetError
from problems.import_formats import FORMATS, ImportedProblem, PeerTally
from storage import rundir
from storage.digest import sha256_of
from storage.traces import filesystem, write_shard

MANIFEST = "ingest.json"  # written last: the import is complete
PEER_FILE = "peer.json"  # the source's own numbers and how marginal recomputes them


@dataclass
class IngestSummary:
    run_dir: str
    problems: int = 0
    samples: int = 0
    shards: int = 0
    files: list[str] = field(default_factory=list)
    already: bool = False  # the same files were imported before: nothing written


def source_files(fmt: str, path: str) -> list[Path]:
    """The file `path`, or every file of the format under the folder `path`, in a stable order."""
    source = Path(path)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DatasetError(f"path={path}: no such file or folder")
    files = sorted(p for p in source.rglob(FORMATS[fmt].pattern) if p.is_file())
    if not files:
        raise DatasetError(f"path={path}: no {FORMATS[fmt].pattern} file under this folder (format={fmt})")
    return files


def fingerprint(files: list[Path], path: str) -> list[dict[str, Any]]:
    """Each file's name (under `path`), size and sha256: what makes two imports the same."""
    root = Path(path) if Path(path).is_dir() else Path(path).parent
    return [{"file": str(file.relative_to(root)), "bytes": file.stat().st_size, "sha256": sha256_of(file)}
            for file in files]


def check_same_source(run_dir: str, sources: list[dict[str, Any]]) -> None:
    """ConfigError unless run_dir is new, holds an import of these very files (names, sizes, sha256), or an
    import that did not finish (which is cleared)."""
    saved = rundir.saved_config(run_dir)
    if saved is None:
        return
    held = (saved.get("ingest") or {}).get("sources")
    if held is None:
        raise ConfigError(f"run_dir={run_dir} holds a sampled run, not an import: import into another run_dir")
    if held != sources and rundir.read_text(f"{run_dir}/{MANIFEST}") is None:
        clear_incomplete(run_dir)  # cut short, or stopped at a bad line: the new source replaces it
    elif held != sources:
        names = ", ".join(f"{s['file']} (sha256 {s['sha256'][:12]}…)" for s in held[:3])
        raise ConfigError(f"run_dir={run_dir} holds an import of other files ({names}{', …' if len(held) > 3 else ''}): "
                          "import these into another run_dir")


def clear_incomplete(run_dir: str) -> None:
    """Remove an unfinished import's shards and config, so that another source can be imported in its place."""
    fs, root = filesystem(run_dir)
    for shard in fs.get_file_info(pafs.FileSelector(f"{root}/traces", allow_not_found=True)):
        if shard.base_name.startswith("ingest-"):
            fs.delete_file(shard.path)
    fs.delete_file(f"{root}/config.yaml")


def run_config(cfg: DictConfig, sources: list[dict[str, Any]], first: ImportedProblem) -> dict[str, Any]:
    """What config.yaml records: the import's settings and source, named as a sampled run's (model, dataset)."""
    settings = {"format": cfg.format, "gold_pattern": cfg.gold_pattern, "shard_rows": cfg.shard_rows, "sources": sources}
    if FORMATS[cfg.format].fields:
        settings["fields"] = dict(cfg.fields)
    return {"ingest": settings, "model": {"name": first.model or "unknown"}, "dataset": {"name": first.prompt},
            "answer": {"format": cfg.answer.format}, "run_dir": cfg.run_dir}


def trace_rows(problem: ImportedProblem, run_id: str) -> Iterator[dict[str, Any]]:
    """One trace row per sample of an imported problem, sample_idx in stored order."""
    for index, text in enumerate(problem.texts):
        yield {"run_id": run_id, "model": problem.model or "unknown", "prompt": problem.prompt, "decoding": SAMPLE,
               "problem_id": problem.problem_id, "question": problem.question, "gold": problem.gold,
               "sample_idx": index, "temperature": problem.temperature, "text": text,
               "num_tokens": problem.num_tokens[index] if problem.num_tokens else None}


def ingest(cfg: DictConfig) -> IngestSummary:
    """Stream the source into `<run_dir>/traces/`, `shard_rows` samples per shard; peer.json and ingest.json last."""
    validate_ingest(cfg)  # also when called directly, not through the entry point
    files = source_files(cfg.format, cfg.path)
    summary = IngestSummary(cfg.run_dir, files=[str(f) for f in files])
    tally = PeerTally(cfg.format)
    problems = FORMATS[cfg.format].read(files, cfg, tally)
    first = next(problems, None)
    if first is None:
        raise DatasetError(f"path={cfg.path}: no problems in {len(files)} file(s)")
    sources = fingerprint(files, cfg.path)
    check_same_source(cfg.run_dir, sources)
    run_id = rundir.prepare(cfg.run_dir, run_config(cfg, sources, first))
    if rundir.read_text(f"{cfg.run_dir}/{MANIFEST}") is not None:
        summary.already = True
        return summary
    seen: set[str] = set()
    batch: list[dict[str, Any]] = []
    for problem in _chain(first, problems):
        if problem.problem_id in seen:
            raise DatasetError(f"{problem.where}: problem {problem.problem_id!r} appears a second time")
        seen.add(problem.problem_id)
        summary.problems += 1
        for row in trace_rows(problem, run_id):
            batch.append(row)
            if len(batch) == cfg.shard_rows:
                summary.shards, summary.samples = _flush(batch, cfg.run_dir, summary)
    if batch:
        summary.shards, summary.samples = _flush(batch, cfg.run_dir, summary)
    rundir.write_text(f"{cfg.run_dir}/{PEER_FILE}", json.dumps({"tool": cfg.format, "metrics": tally.entries()}, indent=1))
    manifest = {"format": cfg.format, "path": cfg.path, "files": summary.files, "problems": summary.problems,
                "samples": summary.samples, "shards": summary.shards}
    rundir.write_text(f"{cfg.run_dir}/{MANIFEST}", json.dumps(manifest, indent=1))
    return summary


def _chain(first: ImportedProblem, rest: Iterator[ImportedProblem]) -> Iterator[ImportedProblem]:
    yield first
    yield from rest


def _flush(batch: list[dict[str, Any]], run_dir: str, summary: IngestSummary) -> tuple[int, int]:
    """Write the batch as the next shard (names fixed by position: a rerun overwrites, never duplicates); empty it."""
    write_shard(batch, run_dir, f"ingest-{summary.shards:06d}")
    count = len(batch)
    batch.clear()
    return summary.shards + 1, summary.samples + count


def peer_lines(run_dir: str, problem_ids: list[str], votes: list[Any]) -> list[str]:
    """The source's own numbers (peer.json) beside marginal's on the same samples, one line per metric."""
    text = rundir.read_text(f"{run_dir.rstrip('/')}/{PEER_FILE}")
    entries = json.loads(text)["metrics"] if text else []
    if not entries:
        return []
    tool = json.loads(text)["tool"]
    lines = [f"{tool}'s own numbers (its extraction, grading and sample order), beside marginal's on the same samples:"]
    width = max(len(entry["name"]) for entry in entries) + 2
    for entry in entries:
        subset = [v for pid, v in zip(problem_ids, votes) if pid.startswith(entry["subset"])]
        head = f"  {entry['name']:<{width}}{100 * entry['value']:>6.1f}%"
        if entry["method"] is None or not subset:
            lines.append(f"{head}   not recomputed: {entry['why'] or 'none of its problems were aggregated'}")
            continue
        k = entry["k"]
        if k is not None and k > min(len(p.labels) for p in subset):
            lines.append(f"{head}   not recomputed: k={k} exceeds the samples of some problems")
            continue
        method = peer_lib.PEER_METHODS[entry["method"]]
        same, exact = method.peer(subset, k), method.exact(subset, k)
        sizes = {len(p.labels) for p in subset}
        shown = k or (sizes.pop() if len(sizes) == 1 else "n")  # k None: every sample
        lines.append(f"{head}   marginal: {method.label.format(k=shown)} {100 * same:.1f}%, "
                     f"{method.exact_label.format(k=shown)} {100 * exact:.1f}%")
    return lines


@cli.entry_point("ingest")
def main(cfg: DictConfig) -> None:
    summary = ingest(cfg)
    if summary.already:
        print(f"[ingest] {cfg.run_dir} already holds these {len(summary.files)} file(s): nothing to add", file=sys.stderr)
        return
    print(f"[ingest] {summary.problems} problems, {summary.samples} samples from {len(summary.files)} file(s) -> "
          f"{cfg.run_dir}/traces ({summary.shards} shards); next: python -m jobs.aggregate run_dir={cfg.run_dir}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
