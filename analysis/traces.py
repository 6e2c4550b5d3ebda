"""The trace schema: one Parquet row per sample under `<run_dir>/traces/`, one shard per work unit.

A shard is written under a hidden temporary name and renamed into place, so a half-written shard is
never read (pyarrow.dataset skips names starting with '.' or '_'). `run_dir` is a local path or any
URI pyarrow.fs understands (s3://, gs://, hdfs://).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Set as AbstractSet
from typing import Any, Iterable, Iterator, Optional

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TRACE_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("prompt", pa.string()),  # prompt style name
        ("decoding", pa.string()),  # sample | cot_decoding
        ("problem_id", pa.string()),
        ("question", pa.string()),
        ("gold", pa.string()),
        ("sample_idx", pa.int64()),
        ("seed", pa.int64()),
        ("temperature", pa.float64()),
        ("top_p", pa.float64()),
        ("text", pa.string()),
        ("num_tokens", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("finish_reason", pa.string()),  # stop | length | error
        ("error", pa.string()),  # why a sample failed, else null
        ("cumulative_logprob", pa.float64()),
        ("token_logprobs", pa.list_(pa.float32())),  # sampled token's logprob per step
        ("top_logprobs", pa.list_(pa.list_(pa.float32()))),  # top-k logprobs per step, when asked
        ("branch_rank", pa.int64()),  # cot_decoding: rank of the first token branched on
        ("answer_confidence", pa.float64()),  # cot_decoding: mean p(top1) - p(top2) over answer tokens
        ("replica", pa.string()),  # node and process that generated the row
    ]
)
REQUIRED_COLUMNS = ("problem_id", "sample_idx", "text", "gold")


class RunDirError(OSError):
    """run_dir cannot hold the run's files (not writable, full, or under a file)."""


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path of a local path or URI."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(uri)


def traces_dir(run_dir: str) -> str:
    return run_dir.rstrip("/") + "/traces"


def write_shard(rows: list[dict[str, Any]], run_dir: str, name: str) -> str:
    """Write rows as `traces/<name>.parquet` (zstd), atomically; returns the shard path.

    A storage failure (not writable, disk full) leaves no file behind and raises RunDirError naming run_dir.
    """
    fs, root = filesystem(traces_dir(run_dir))
    final, tmp = f"{root}/{name}.parquet", f"{root}/.{name}.{uuid.uuid4().hex}.tmp"
    table = pa.Table.from_pylist(rows, schema=TRACE_SCHEMA)
    try:
        fs.create_dir(root, recursive=True)
        pq.write_table(table, tmp, filesystem=fs, compression="zstd")
        fs.move(tmp, final)
    except BaseException as error:
        _delete_quietly(fs, tmp)
        if isinstance(error, OSError):
            raise RunDirError(f"run_dir={run_dir}: cannot write shard {name}.parquet: {error}") from error
        raise
    return final


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except OSError:
        pass


def open_traces(run_dir: str) -> ds.Dataset:
    """The run's traces as a pyarrow dataset; fails if none exist or required columns are missing."""
    fs, root = filesystem(traces_dir(run_dir))
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{run_dir}: no traces/ folder")
    dataset = ds.dataset(root, filesystem=fs, format="parquet")
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.schema.names]
    if missing:
        raise ValueError(f"{root}: traces lack required columns {missing}")
    return dataset


class SampleSet(AbstractSet[int]):
    """Sample indices as a bitmap, one bit per index: a million done samples take 125 kB, not 100 MB of ints."""

    def __init__(self, indices: Iterable[int] = ()):
        self.bits, self.count = bytearray(), 0
        for index in indices:
            self.add(index)

    def add(self, index: int) -> None:
        byte, bit = divmod(index, 8)
        if byte >= len(self.bits):
            self.bits.extend(bytes(byte + 1 - len(self.bits)))
        if not self.bits[byte] >> bit & 1:
            self.bits[byte] |= 1 << bit
            self.count += 1

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or index < 0:
            return False
        byte, bit = divmod(index, 8)
        return byte < len(self.bits) and bool(self.bits[byte] >> bit & 1)

    def __iter__(self) -> Iterator[int]:
        return (index for index in range(len(self.bits) * 8) if index in self)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"SampleSet({set(self)})"


def done_samples(run_dir: str) -> dict[str, SampleSet]:
    """The sample indices already written, per problem_id (empty for a new run); memory grows with n, not rows."""
    fs, root = filesystem(traces_dir(run_dir))
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return {}
    dataset = ds.dataset(root, filesystem=fs, format="parquet")
    if not dataset.files:  # at most the hidden temp files of interrupted writes
        return {}
    done: dict[str, SampleSet] = defaultdict(SampleSet)
    for path in dataset.files:  # shard by shard: a dataset scan keeps state per shard read (~75 MB per 1,000)
        shard = pq.read_table(path, columns=["problem_id", "sample_idx"], filesystem=fs)
        for problem_id, sample_idx in zip(shard.column(0).to_pylist(), shard.column(1).to_pylist()):
            done[problem_id].add(sample_idx)
    return done


def read_columns(run_dir: str, columns: Iterable[str], filter: Optional[ds.Expression] = None) -> pa.Table:
    """Selected columns of all traces, sorted by (problem_id, sample_idx)."""
    table = open_traces(run_dir).to_table(columns=list(columns), filter=filter)
    return table.sort_by([("problem_id", "ascending"), ("sample_idx", "ascending")])
