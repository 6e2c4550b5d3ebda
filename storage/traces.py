"""The trace schema: one Parquet row per sample under `<run_dir>/traces/`, in shards of any size.

A shard is written under a hidden temporary name and renamed into place, so a half-written shard is
never read (pyarrow.dataset skips names starting with '.' or '_'). Shards carry page checksums; one
damaged afterwards (cut short, zeroed, overwritten) is reported as DamagedShardError naming it. The
shards a compaction has replaced but not yet deleted are never read (storage.compaction).
`run_dir` is a local path or any URI pyarrow.fs understands (s3://, gs://, hdfs://).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Set as AbstractSet
from typing import Any, Callable, Iterable, Iterator, NoReturn, Optional

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis.errors import MarginalError

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
SAMPLE_ORDER = ("problem_id", "sample_idx")  # the order a run's rows are read in: by problem, then by sample
IGNORED_PREFIXES = (".", "_")  # what pyarrow.dataset skips: temp files of writes, the quarantine
QUARANTINE = ".quarantine"  # traces/.quarantine/: where a resume moves the shards it cannot read whole
MANIFEST, OUTPUT = "_compact-{}.json", "compact-{}.parquet"  # a compaction's manifest and output (storage.compaction)
# Reads verify the page checksums that write_shard stores; a shard written without them is read unverified.
PARQUET = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True))


class RunDirError(MarginalError, OSError):
    """run_dir cannot hold the run's files (not writable, full, or under a file)."""


class NoTracesError(RunDirError, FileNotFoundError):
    """run_dir holds no traces/ folder (not sampled yet, or a wrong path)."""


class DamagedShardError(MarginalError, ValueError):
    """A trace shard that cannot be read whole; a rerun of the job that sampled it quarantines and redoes it."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(
            f"{path}: trace shard cannot be read whole ({reason}); rerun jobs.sample with the same run_dir "
            f"(jobs.evaluate for a greedy/ baseline) to move it to traces/{QUARANTINE}/ and sample it again"
        )


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
    moved = False
    try:
        fs.create_dir(root, recursive=True)
        pq.write_table(table, tmp, filesystem=fs, compression="zstd", write_page_checksum=True)
        fs.move(tmp, final)
        moved = True
    except OSError as error:
        raise RunDirError(f"run_dir={run_dir}: cannot write shard {name}.parquet: {error}") from error
    finally:
        if not moved:  # whatever stopped the write (a full disk, an interrupt): no temporary file is left
            delete_quietly(fs, tmp)
    return final


def delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    """Delete a file if it is there (a leftover temporary file: failing to delete it is not an error)."""
    try:
        fs.delete_file(path)
    except OSError:
        pass


def shard_paths(fs: pafs.FileSystem, root: str) -> list[str]:
    """Every shard under `root`: files with no path part hidden ('.', '_'), less those a finished compaction
    replaced (storage.compaction: its manifest is still there, its inputs not yet deleted)."""
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = [i.path for i in infos if i.type == pafs.FileType.File]
    visible = {path for path in files if not any(part.startswith(IGNORED_PREFIXES) for part in path[len(root):].split("/"))}
    return sorted(visible - replaced(fs, root, files, visible))


def read_shard(fs: pafs.FileSystem, path: str) -> Iterator[pa.Table]:
    """A shard's row groups, each read whole (every column decoded, page checksums verified), one at a time so
    that a compacted shard takes one row group's memory; DamagedShardError saying why one cannot be (after the
    row groups before it: a caller that needs the shard whole waits for the end).

    A storage fault while fetching its bytes (unreachable, no permission) is not damage: it propagates as is."""
    with fs.open_input_stream(path) as stream:
        data = stream.read()
    try:
        file = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
        missing = [c for c in ("problem_id", "sample_idx") if c not in file.schema_arrow.names]
        if missing:
            raise DamagedShardError(path, f"no {' or '.join(missing)} column")
        for group in range(file.num_row_groups):
            yield file.read_row_group(group)
    except (pa.ArrowException, OSError) as error:
        message = " ".join(str(error).split()).replace("Could not open Parquet input source '<Buffer>': ", "")
        raise DamagedShardError(path, f"{len(data)} bytes: {message.split('. Either')[0]}") from None


def raise_damaged(error: BaseException, fs: pafs.FileSystem, paths: Iterable[str]) -> NoReturn:
    """After a failed read: DamagedShardError for the first of `paths` that cannot be read whole, else `error`."""
    for path in paths:
        for _ in read_shard(fs, path):
            pass
    raise error


def replaced(fs: pafs.FileSystem, root: str, files: Iterable[str], visible: set[str]) -> set[str]:
    """The inputs of every compaction whose output is in place (`visible`) and whose manifest is still there."""
    out: set[str] = set()
    for path in files:
        name = path.rsplit("/", 1)[-1]
        if is_manifest(name):
            manifest = read_manifest(fs, path)
            if f"{root}/{manifest['output']}" in visible:
                out.update(f"{root}/{n}" for n in manifest["inputs"])
    return out


def is_manifest(name: str) -> bool:
    """Whether a file name in traces/ is a compaction's manifest."""
    return name.startswith(MANIFEST.split("{")[0]) and name.endswith(".json")


def read_manifest(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    """A compaction's manifest: {"output": name, "inputs": [names]}."""
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read())


def open_traces(run_dir: str) -> ds.Dataset:
    """The run's traces as a pyarrow dataset; fails if none exist, a shard is damaged or required columns are missing."""
    fs, root = filesystem(traces_dir(run_dir))
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise NoTracesError(f"{run_dir}: no traces/ folder")
    paths = shard_paths(fs, root)
    try:
        dataset = ds.dataset(paths, filesystem=fs, format=PARQUET)  # reads the first shard's schema
    except (pa.ArrowException, OSError) as error:
        raise_damaged(error, fs, paths)
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.schema.names]
    if missing:
        raise RunDirError(f"{root}: traces lack required columns {missing}")
    return dataset


def scan(dataset: ds.Dataset, **options: Any) -> Iterator[pa.RecordBatch]:
    """`dataset.to_batches(**options)`; a shard that cannot be read whole raises DamagedShardError naming it."""
    try:
        yield from dataset.to_batches(**options)
    except (pa.ArrowException, OSError) as error:
        raise_damaged(error, dataset.filesystem, dataset.files)


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

    def update(self, other: "SampleSet") -> None:
        """Add every index of `other`."""
        union = int.from_bytes(self.bits, "little") | int.from_bytes(other.bits, "little")
        self.bits = bytearray(union.to_bytes(max(len(self.bits), len(other.bits)), "little"))
        self.count = union.bit_count()

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


def _refuse(error: DamagedShardError) -> None:
    raise error


def done_samples(run_dir: str, damaged: Callable[[DamagedShardError], None] = _refuse) -> dict[str, SampleSet]:
    """The sample indices already written, per problem_id (empty for a new run); memory grows with n, not rows.

    Every shard is read whole; one that cannot be is handed to `damaged` and skipped (by default it is raised)."""
    fs, root = filesystem(traces_dir(run_dir))
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return {}
    done: dict[str, SampleSet] = defaultdict(SampleSet)
    for path in shard_paths(fs, root):  # shard by shard: a dataset scan keeps state per shard read (~75 MB per 1,000)
        shard: dict[str, SampleSet] = defaultdict(SampleSet)  # only a shard read whole counts: its keys wait here
        try:
            for group in read_shard(fs, path):
                for problem_id, sample_idx in zip(group["problem_id"].to_pylist(), group["sample_idx"].to_pylist()):
                    shard[problem_id].add(sample_idx)
        except DamagedShardError as error:
            damaged(error)
            continue
        for problem_id, indices in shard.items():
            done[problem_id].update(indices)
    return done


class ShardIndex:
    """The shards of one run_dir known so far and their rows: what is kept on disk. A driver adds the shards its
    replicas report writing, and lists the folder only to learn what a dead replica wrote but never reported."""

    def __init__(self, run_dir: str):
        self.fs, self.root = filesystem(traces_dir(run_dir))
        self.rows: dict[str, int] = {}  # path -> rows
        self.total = 0

    def add(self, path: str, rows: int) -> None:
        """A shard written (counted once, however often it is reported or listed)."""
        if path not in self.rows:
            self.rows[path] = rows
            self.total += rows

    def refresh(self) -> None:
        """Add every shard on disk not known yet (its footer read for its rows)."""
        if self.fs.get_file_info(self.root).type != pafs.FileType.Directory:
            return
        for path in shard_paths(self.fs, self.root):
            if path not in self.rows:
                self.add(path, pq.read_metadata(path, filesystem=self.fs).num_rows)

    def read(self, paths: Iterable[str], columns: list[str], filter: Optional[ds.Expression] = None) -> pa.Table:
        """`columns` of the rows of `paths` (shards this index listed), as one table."""
        return _to_table(ds.dataset(list(paths), filesystem=self.fs, format=PARQUET), columns, filter)


def read_columns(run_dir: str, columns: Iterable[str], filter: Optional[ds.Expression] = None) -> pa.Table:
    """Selected columns of all traces, in sample order."""
    return in_sample_order(_to_table(open_traces(run_dir), list(columns), filter))


def in_sample_order(table: pa.Table) -> pa.Table:
    """`table` sorted by SAMPLE_ORDER: problem_id, then sample_idx."""
    return table.sort_by([(column, "ascending") for column in SAMPLE_ORDER])


def _to_table(dataset: ds.Dataset, columns: list[str], filter: Optional[ds.Expression]) -> pa.Table:
    """`dataset.to_table`; a shard that cannot be read whole raises DamagedShardError naming it."""
    try:
        return dataset.to_table(columns=columns, filter=filter)
    except (pa.ArrowException, OSError) as error:
        raise_damaged(error, dataset.filesystem, dataset.files)
