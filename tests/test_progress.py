"""Progress: the count is of samples kept on disk, rates run from the engines' start, and lines come off a terminal
at a bounded rate with a heartbeat."""

from __future__ import annotations

import io
import re
import time

from analysis.traces import open_traces
from jobs.progress import Progress

LINE = re.compile(r"^\[progress\] (\d+)/(\d+) samples kept \((\d+)%\), (?:[\d.]+ samples/s, \d+ tok/s, )?\d+m\d\ds "
                  r"elapsed, (ETA \S+|ETA unknown until a sample is kept|engines loading)(?:; (\d+) in flight)?$")
ENGINES = {"node:1": {"in_flight": 48, "generated": 900}}


def lines(stream: io.StringIO) -> list[re.Match]:
    return [LINE.match(line) for line in stream.getvalue().splitlines()]


def test_moves_print_at_a_bounded_rate_and_the_last_one_always():
    stream = io.StringIO()  # not a terminal
    with Progress(100, stream, heartbeat_s=60, min_interval_s=0.2) as progress:
        progress.engines_loaded()
        time.sleep(0.25)
        progress.update(10, ENGINES)  # printed: the interval has passed
        for kept in range(20, 100, 10):
            progress.update(kept, ENGINES)  # within the interval: not printed
        progress.update(100, ENGINES)  # the last sample: printed
    found = lines(stream)
    assert all(found) and [m.group(1) for m in found] == ["10", "100"]
    assert found[0].group(3) == "10" and found[-1].group(4) == "ETA 0m00s" and found[-1].group(5) == "48"


def test_the_eta_is_the_samples_left_at_the_rate_since_the_engines_started():
    with Progress(1000, io.StringIO(), heartbeat_s=60) as progress:
        assert progress.line().endswith("elapsed, engines loading")
        progress.engines_loaded()
        progress.update(0, ENGINES)
        assert progress.line().endswith("ETA unknown until a sample is kept; 48 in flight")
        progress.engines_start -= 100  # as if the engines started 100 s ago
        progress.update(250, ENGINES)  # 2.5 samples/s: 750 left take 300 s
        assert re.search(r"250/1000 samples kept \(25%\), 2.50 samples/s, 9 tok/s, .* ETA 5m00s; 48 in flight$",
                         progress.line())


def test_tokens_count_every_replica_ever_seen_a_replaced_one_included():
    with Progress(10, io.StringIO(), heartbeat_s=60) as progress:
        progress.engines_loaded()
        progress.update(0, {"a": {"in_flight": 1, "generated": 500}, "b": {"in_flight": 1, "generated": 300}})
        progress.update(0, {"b": {"in_flight": 1, "generated": 400}, "c": {"in_flight": 1, "generated": 50}})  # a died
        assert sum(progress.generated.values()) == 950 and progress.in_flight == 2


def test_a_heartbeat_line_comes_while_nothing_moves():
    stream = io.StringIO()
    with Progress(50, stream, heartbeat_s=0.1, min_interval_s=10):
        time.sleep(0.35)
    found = lines(stream)
    assert len(found) >= 2 and all(found)
    assert {m.group(1) for m in found} == {"0"} and found[0].group(4) == "engines loading"


def test_each_line_of_a_sampling_run_counts_exactly_what_is_on_disk(local_ray, tmp_path, monkeypatch):
    """Never more than is on disk as it prints, never less than was on disk at the line before."""
    from actors.double import EngineDouble
    from jobs.cli import compose
    from jobs.sample import sample_runs

    printed: list[tuple[int, int]] = []  # (count printed, rows on disk then)
    show = Progress._print

    def checked_print(self):
        show(self)
        printed.append((self.kept, open_traces(f"{tmp_path}/run").count_rows()))

    monkeypatch.setattr(Progress, "_print", checked_print)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = compose(f"run_dir={tmp_path}/run", f"model.path={model}", "tracking=none", "dataset.limit=4",
                  "sampling.n=16", "cluster.cpus_per_replica=1", "cluster.unit_size=64", "cluster.flush_s=0.2",
                  "sampling.max_tokens=400", "+cluster.engine.step_s=0.01")
    monkeypatch.setattr("jobs.sample.Progress", lambda total: Progress(total, min_interval_s=0.0))  # every move
    monkeypatch.setattr("actors.pool.TICK_S", 0.2)  # the driver lists the shards every 0.2 s
    sample_runs([cfg], replica_class=EngineDouble)  # one unit of 64, its samples from ~20 to 400 steps of 0.01 s
    assert len(printed) >= 3 and printed[-1] == (64, 64)
    assert any(0 < count < 64 for count, _ in printed)  # counted while the unit ran, not when it ended
    previous_disk = 0
    for count, disk in printed:
        assert previous_disk <= count <= disk
        previous_disk = disk
