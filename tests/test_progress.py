"""Progress off a terminal: one line per landed unit at a bounded rate, and a heartbeat while generating."""

from __future__ import annotations

import io
import re
import time

from actors import pool
from jobs.progress import Progress

LINE = re.compile(r"^\[progress\] (\d+)/(\d+) samples \((\d+)%\), [\d.]+ samples/s, \d+ tok/s, \d+m\d\ds elapsed, ETA (\S+)(?:; engines: \d+ samples in flight, ~\d+ tok/s)?$")


def lines(stream: io.StringIO) -> list[re.Match]:
    return [LINE.match(line) for line in stream.getvalue().splitlines()]


def test_units_print_at_a_bounded_rate_and_the_last_one_always():
    stream = io.StringIO()  # not a terminal
    with Progress(100, stream, heartbeat_s=60, min_interval_s=0.2) as progress:
        time.sleep(0.25)
        progress.update(10, 500)  # printed: the interval has passed
        for _ in range(8):
            progress.update(10, 500)  # within the interval: not printed
        progress.update(10, 500)  # the last unit: printed
    found = lines(stream)
    assert all(found) and [m.group(1) for m in found] == ["10", "100"]
    assert found[0].group(3) == "10" and found[-1].group(4) == "0m00s"


def test_a_heartbeat_line_comes_while_no_unit_lands():
    stream = io.StringIO()
    with Progress(50, stream, heartbeat_s=0.1, min_interval_s=10):
        time.sleep(0.35)
    found = lines(stream)
    assert len(found) >= 2 and all(found)
    assert {m.group(1) for m in found} == {"0"} and found[0].group(4) == "unknown"


def test_a_sampling_run_off_a_terminal_prints_progress(local_ray, tmp_path, capsys):
    from actors.double import EngineDouble
    from jobs.cli import compose
    from jobs.sample import sample_runs

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = compose(f"run_dir={tmp_path}/run", f"model.path={model}", "tracking=none", "dataset.limit=4",
                  "sampling.n=4", "cluster.cpus_per_replica=1", "cluster.unit_size=4")
    sample_runs([cfg], replica_class=EngineDouble)
    found = [LINE.match(line) for line in capsys.readouterr().err.splitlines() if line.startswith("[progress]")]
    assert found and all(found) and found[-1].group(1) == found[-1].group(2) == "16"


def test_the_line_says_what_the_engines_report_before_any_unit_lands():
    stream = io.StringIO()
    with Progress(64, stream, heartbeat_s=60) as progress:
        assert "engines" not in progress.line()
        progress.engine({"in_flight": 48, "generated": 900})
        assert re.search(r"0/64 samples .*, 0m00s elapsed, ETA unknown; engines: 48 samples in flight, ~\d+ tok/s$",
                         progress.line())


def test_a_sampling_run_asks_its_replicas_what_they_do_while_no_unit_lands(local_ray, tmp_path, monkeypatch):
    from actors.double import EngineDouble
    from jobs.cli import compose
    from jobs.sample import sample_runs

    monkeypatch.setattr(pool, "WATCH_S", 0.3)
    reports, report = [], Progress.engine
    monkeypatch.setattr(Progress, "engine", lambda self, activity: (reports.append(dict(activity)), report(self, activity)))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = compose(f"run_dir={tmp_path}/run", f"model.path={model}", "tracking=none", "dataset.limit=2",
                  "sampling.n=8", "cluster.cpus_per_replica=1", "cluster.unit_size=16", "+cluster.engine.step_s=0.02")
    sample_runs([cfg], replica_class=EngineDouble)  # one unit of 16, its samples up to 192 steps of 0.02 s
    assert any(r["in_flight"] > 0 and r["generated"] > 0 for r in reports)
    assert [r["generated"] for r in reports] == sorted(r["generated"] for r in reports)
