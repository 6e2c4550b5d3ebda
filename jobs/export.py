"""Rejection-sampling export (STaR, Zelikman et al. 2022): a run's right samples as fine-tuning data.

    python -m jobs.export run_dir=DIR [out=DIR/sft] [export.max_per_problem=4]

answers.parquet (written by jobs.aggregate) says which samples are right; only their traces are read,
streamed. Per problem, at most `export.max_per_problem` samples are kept, lowest sample_idx first,
skipping texts equal to a kept one up to whitespace. Writes into `out`: sft.jsonl (one chat per line:
the run's prompt, without few-shot exemplars, as the user turn and the sample as the assistant's, with
problem_id, sample_idx, source_run, run_dir and model), sft.parquet (the same records), and export.json
(the source run and counts).
"""

from __future__ import annotations

import json
import sys
from operator import itemgetter
from typing import Any, Iterator, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from omegaconf import DictConfig, OmegaConf

from analysis.errors import MarginalError
from jobs import cli
from problems.datasets import Problem
from problems.prompts import render
from storage import rundir
from storage.traces import SAMPLE_ORDER, open_traces, scan

READ_BATCH = 8192
TRACE_COLUMNS = ["problem_id", "sample_idx", "question", "text", "run_id", "model"]


class ExportError(MarginalError, ValueError):
    """A run that cannot be exported; the message says what to do."""


def right_samples(run_dir: str) -> dict[str, set[int]]:
    """The sample indices graded right, per problem, from the run's answers.parquet."""
    table = rundir.read_table(run_dir, "answers.parquet", ["problem_id", "sample_idx", "correct"])
    if table is None:
        raise ExportError(f"{run_dir}: no answers.parquet; run `python -m jobs.aggregate run_dir={run_dir}` first")
    table = table.filter(pc.equal(table["correct"], True))
    right: dict[str, set[int]] = {}
    for pid, idx in zip(table["problem_id"].to_pylist(), table["sample_idx"].to_pylist()):
        right.setdefault(pid, set()).add(idx)
    return right


def right_traces(run_dir: str, right: dict[str, set[int]]) -> Iterator[dict[str, Any]]:
    """The trace rows of the right samples, streamed in batches (other problems are filtered out on read)."""
    dataset = open_traces(run_dir)
    columns = [c for c in TRACE_COLUMNS if c in dataset.schema.names]
    only = ds.field("problem_id").isin(list(right))
    for batch in scan(dataset, columns=columns, filter=only, batch_size=READ_BATCH):
        for row in batch.to_pylist():
            if row["sample_idx"] in right[row["problem_id"]]:
                yield row


def keep(kept: dict[str, dict[str, Any]], row: dict[str, Any], limit: int) -> None:
    """Add `row` to one problem's kept rows (keyed by normalized text): a duplicate text keeps its lowest
    sample_idx, and beyond `limit` texts the highest sample_idx goes; any arrival order gives the same result."""
    key = " ".join(row["text"].split())
    if key in kept and kept[key]["sample_idx"] <= row["sample_idx"]:
        return
    kept[key] = row
    if len(kept) > limit:
        del kept[max(kept, key=lambda k: kept[k]["sample_idx"])]


def user_turn(prompt: Optional[dict[str, Any]], question: str) -> list[dict[str, str]]:
    """The chat messages before the answer: the run's prompt style rendered as chat, without exemplars."""
    if not prompt:
        return [{"role": "user", "content": question}]
    return render(OmegaConf.create({**prompt, "chat": True}), Problem("", question, ""))


def export(run_dir: str, out: str, max_per_problem: int) -> dict[str, Any]:
    """Write sft.jsonl, sft.parquet and export.json into `out` (`max_per_problem` >= 1: jobs.config.validate_export);
    returns the manifest."""
    right = right_samples(run_dir)
    kept: dict[str, dict[str, dict[str, Any]]] = {}
    for row in right_traces(run_dir, right) if right else ():
        keep(kept.setdefault(row["problem_id"], {}), row, max_per_problem)
    prompt = (rundir.saved_config(run_dir) or {}).get("prompt")
    rows = sorted((row for texts in kept.values() for row in texts.values()), key=itemgetter(*SAMPLE_ORDER))
    records = [
        {"messages": user_turn(prompt, row["question"]) + [{"role": "assistant", "content": row["text"]}],
         "problem_id": row["problem_id"], "sample_idx": row["sample_idx"], "source_run": row.get("run_id"),
         "run_dir": run_dir, "model": row.get("model")}
        for row in rows
    ]
    out = out.rstrip("/")
    rundir.write_text(f"{out}/sft.jsonl", "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    rundir.write_table(pa.Table.from_pylist(records), out, "sft.parquet")
    manifest = {
        "source_run": records[0]["source_run"] if records else None,
        "run_dir": run_dir,
        "model": records[0]["model"] if records else None,
        "prompt": (prompt or {}).get("name"),
        "records": len(records),
        "problems": len(kept),
        "right_samples": sum(len(idx) for idx in right.values()),
        "max_per_problem": max_per_problem,
        "files": ["sft.jsonl", "sft.parquet"],
    }
    rundir.write_text(f"{out}/export.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


@cli.entry_point("export")
def main(cfg: DictConfig) -> None:
    out = cfg.out or f"{cfg.run_dir.rstrip('/')}/sft"
    manifest = export(cfg.run_dir, out, cfg.export.max_per_problem)
    print(f"[export] {manifest['records']} samples of {manifest['problems']} problems "
          f"({manifest['right_samples']} right in all) -> {out}/sft.jsonl, {out}/sft.parquet", file=sys.stderr)


if __name__ == "__main__":
    main()
