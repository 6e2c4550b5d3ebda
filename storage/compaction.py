"""Compaction: a run's small shards merged into large ones, atomically, so a killed compaction loses nothing.

Replicas write a shard every few seconds, so a long run holds thousands. Compaction streams a group of
small shards into one `compact-<id>.parquet` in four steps, each atomic:
  1. write it under a hidden temporary name;
  2. write the manifest `_compact-<id>.json`, naming its inputs (also under a temporary name first);
  3. rename it into place: from now on readers skip the inputs the manifest names (`replaced`);
  4. delete the inputs, then the manifest.
Killed at any point, every sample is read exactly once: before step 3 from the inputs, after it from the
output. The next compaction finishes or clears what a killed one left.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.traces import (MANIFEST, OUTPUT, DamagedShardError, delete_quietly, filesystem, is_manifest, read_manifest,
                             read_shard, shard_paths, traces_dir)

TARGET_BYTES = 64 * 2**20  # a compacted shard holds small shards up to about this size
ROW_GROUP_BYTES = 4 * 2**20  # its row groups, as Arrow in memory: few (each costs footer metadata), none large


def compact(run_dir: str, target_bytes: int = TARGET_BYTES) -> tuple[int, int]:
    """Merge run_dir's shards smaller than `target_bytes` into shards of about that size; returns (shards
    merged, shards written). Idempotent: a rerun finds nothing small left to merge."""
    fs, root = filesystem(traces_dir(run_dir))
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return 0, 0
    finish(fs, root)
    sizes = {i.path: i.size for i in fs.get_file_info(shard_paths(fs, root))}
    small = sorted(p for p, size in sizes.items() if size < target_bytes)
    groups, group, held = [], [], 0
    for path in small:
        group.append(path)
        held += sizes[path]
        if held >= target_bytes:
            groups.append(group)
            group, held = [], 0
    groups.append(group)
    merged = [_merge(fs, root, group) for group in groups if len(group) > 1]
    return sum(merged), sum(1 for m in merged if m)


def finish(fs: pafs.FileSystem, root: str) -> None:
    """Complete what a killed compaction left: delete the inputs of an output in place, else the unfinished output."""
    infos = fs.get_file_info(pafs.FileSelector(root))
    names = {i.path.rsplit("/", 1)[-1] for i in infos}
    for name in sorted(names):
        if is_manifest(name):
            manifest = read_manifest(fs, f"{root}/{name}")
            if manifest["output"] in names:
                for n in manifest["inputs"]:
                    if n in names:
                        fs.delete_file(f"{root}/{n}")
            fs.delete_file(f"{root}/{name}")
    for name in names:
        if name.startswith(".compact-") and name.endswith(".tmp"):
            fs.delete_file(f"{root}/{name}")


def _merge(fs: pafs.FileSystem, root: str, paths: list[str]) -> int:
    """One compaction of `paths` into one output, row group by row group; returns the shards merged. A damaged
    input (left for the resume's quarantine) restarts the merge without it; one of another schema (an older
    version) stays as it is."""
    names = [p.rsplit("/", 1)[-1] for p in paths]
    cid = hashlib.blake2b("\n".join(names).encode(), digest_size=12).hexdigest()
    tmp, merged, writer = f"{root}/.compact-{cid}.{uuid.uuid4().hex}.tmp", [], None
    pending, held = [], 0  # row groups read, and their bytes: written together once they hold ROW_GROUP_BYTES
    try:
        for path in paths:
            for group in read_shard(fs, path):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, group.schema, filesystem=fs, compression="zstd",
                                              write_page_checksum=True)
                if not group.schema.equals(writer.schema):
                    break
                pending.append(group)
                held += group.nbytes
                if held >= ROW_GROUP_BYTES:
                    writer.write_table(pa.concat_tables(pending), row_group_size=1 << 30)
                    pending, held = [], 0
            else:
                merged.append(path.rsplit("/", 1)[-1])
            pa.default_memory_pool().release_unused()  # else the allocator keeps ~30 kB per shard read
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=1 << 30)
    except DamagedShardError as error:
        if writer is not None:
            writer.close()
        delete_quietly(fs, tmp)
        return _merge(fs, root, [p for p in paths if p != error.path])
    except BaseException:
        if writer is not None:
            writer.close()
        delete_quietly(fs, tmp)
        raise
    if writer is not None:
        writer.close()
    if len(merged) < 2:
        delete_quietly(fs, tmp)
        return 0
    staged = f"{root}/.compact-{cid}.{uuid.uuid4().hex}.json.tmp"  # a manifest is read whole or not at all
    with fs.open_output_stream(staged) as stream:
        stream.write(json.dumps({"output": OUTPUT.format(cid), "inputs": merged}).encode())
    fs.move(staged, f"{root}/{MANIFEST.format(cid)}")
    fs.move(tmp, f"{root}/{OUTPUT.format(cid)}")
    finish(fs, root)
    return len(merged)
