"""Online adaptive sampling on the engine double: problems stop early, samples are a prefix of the fixed-n run's."""

import time
from pathlib import Path

import pytest

from actors.double import EngineDouble
from analysis.answers import extract_answer, canonicalize
from analysis.stopping import esc
from analysis.voting import group_answers
from jobs.cli import compose
from jobs.sample import sample_runs
from storage.traces import read_columns
from tests.test_disk_faults import kill_with_its_ray, start_job

ADAPTIVE = ("adaptive=esc", "adaptive.rules.esc.window=4", "adaptive.min_samples=4", "adaptive.batch=4")


@pytest.fixture
def model(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # the double loads nothing; check_model wants a model folder
    return folder


def config(run_dir: Path, model: Path, *overrides: str, problems: int = 12, n: int = 16, unit_size: int = 8):
    return compose(f"run_dir={run_dir}", f"model.path={model}", "tracking=none", f"dataset.limit={problems}",
                   f"sampling.n={n}", "replicas=2", "cluster.cpus_per_replica=1", f"cluster.unit_size={unit_size}",
                   *overrides)


def samples(run_dir) -> dict[tuple[str, int], tuple[int, str]]:
    table = read_columns(str(run_dir), ["problem_id", "sample_idx", "seed", "text"])
    rows = zip(*(table[c].to_pylist() for c in ("problem_id", "sample_idx", "seed", "text")))
    return {(p, i): (seed, text) for p, i, seed, text in rows}


def stop_points(fixed: dict[tuple[str, int], tuple[int, str]], n: int) -> dict[str, int]:
    """Where ESC (window 4, asked at 4, 8, 12) stops each problem on the fixed-n run's samples in stored order."""
    used = {}
    for pid in sorted({p for p, _ in fixed}):
        keys = [canonicalize(extract_answer(fixed[pid, i][1], "auto"), "auto") for i in range(n)]
        labels, _ = group_answers(keys, "auto")
        used[pid] = next((t for t in (4, 8, 12) if esc(labels[:t], None, budget=n, window=4)), n)
    return used


def test_an_online_run_stops_where_its_rule_says_and_samples_a_prefix_of_the_fixed_run(local_ray, tmp_path, model):
    fixed_cfg = config(tmp_path / "fixed", model)
    sample_runs([fixed_cfg], replica_class=EngineDouble)
    fixed = samples(fixed_cfg.run_dir)
    [summary] = sample_runs([config(tmp_path / "online", model, *ADAPTIVE)], replica_class=EngineDouble)
    online = samples(tmp_path / "online")
    used = {pid: sum(p == pid for p, _ in online) for pid in {p for p, _ in fixed}}
    assert used == stop_points(fixed, 16)
    assert sum(used.values()) < 12 * 16 and summary.samples == sum(used.values())
    assert all(online[pid, i] == fixed[pid, i] for pid, i in online)  # the same seeds, so the same texts
    assert all(sorted(i for p, i in online if p == pid) == list(range(n)) for pid, n in used.items())


def test_an_online_run_killed_midway_resumes_to_the_samples_of_an_uninterrupted_one(local_ray, tmp_path, model):
    sizes = {"problems": 6, "n": 8, "unit_size": 4}  # as tests/test_disk_faults.py's job runs
    whole = config(tmp_path / "whole", model, *ADAPTIVE, **sizes)
    sample_runs([whole], replica_class=EngineDouble)
    run_dir = tmp_path / "cut"
    job = start_job(run_dir, model, *ADAPTIVE, "++engine.args.delay_s=0.5")
    traces = run_dir / "traces"
    deadline = time.monotonic() + 120
    while len(list(traces.glob("*.parquet"))) < 2:
        assert job.poll() is None and time.monotonic() < deadline, "the job ended or never wrote two shards"
        time.sleep(0.05)
    kill_with_its_ray(job)
    first = samples(run_dir)
    assert 0 < len(first) < len(samples(whole.run_dir))
    sample_runs([config(run_dir, model, *ADAPTIVE, **sizes)], replica_class=EngineDouble)
    assert samples(run_dir) == samples(whole.run_dir)


def test_a_rule_with_a_prior_from_another_run_stops_online_where_its_replay_does(local_ray, tmp_path, model):
    from actors.rounds import answer_labels
    from analysis.stopping import eb, fit_share_prior

    fixed_cfg = config(tmp_path / "fixed", model)
    sample_runs([fixed_cfg], replica_class=EngineDouble)
    fixed = samples(fixed_cfg.run_dir)
    prior = fit_share_prior(answer_labels(fixed_cfg.run_dir, "auto"))
    assert max(prior.weights) < 1  # the double's problems are not all alike: a real mixture, not one point
    rule = ("adaptive=eb", "adaptive.rules.eb.loss=0.05", "adaptive.min_samples=2", "adaptive.batch=2",
            f"adaptive.prior_run={fixed_cfg.run_dir}")
    sample_runs([config(tmp_path / "online", model, *rule)], replica_class=EngineDouble)
    online = samples(tmp_path / "online")
    expected = {}
    for pid in sorted({p for p, _ in fixed}):
        keys = [canonicalize(extract_answer(fixed[pid, i][1], "auto"), "auto") for i in range(16)]
        labels, _ = group_answers(keys, "auto")
        expected[pid] = next((t for t in range(2, 16, 2) if eb(labels[:t], None, budget=16, loss=0.05, prior=prior)), 16)
    assert {pid: sum(p == pid for p, _ in online) for pid in expected} == expected
    assert min(expected.values()) < 16 and all(online[k] == fixed[k] for k in online)
