"""Paired differences to greedy: the same bootstrap resamples for both sides, checked by brute force."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.curves import DELTA_SUFFIX, Estimates, N_BOOTSTRAP, bootstrap_ci, paired_deltas


def _estimates(values: np.ndarray) -> Estimates:
    return Estimates(values, np.zeros_like(values), np.zeros(values.shape, dtype=bool))


def brute_force_paired(values: np.ndarray, baseline: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The paired percentile bootstrap written as a loop: resample problems, average method - baseline."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(N_BOOTSTRAP, len(values)))
    means = np.array([(values[idx] - baseline[idx, None]).mean(axis=0) for idx in picks])
    return np.quantile(means, 0.025, axis=0), np.quantile(means, 0.975, axis=0)


def test_paired_deltas_equal_a_brute_force_paired_bootstrap():
    rng = np.random.default_rng(7)
    greedy = (rng.random(40) < 0.3).astype(float)
    maj = np.clip(greedy[:, None] * 0.8 + rng.random((40, 3)) * 0.5, 0, 1)
    rows = paired_deltas({"maj": _estimates(maj)}, [1, 2, 4], greedy, seed=3)
    low, high = brute_force_paired(maj, greedy, seed=3)
    assert [r["method"] for r in rows] == ["maj" + DELTA_SUFFIX] * 3 == ["maj_minus_greedy"] * 3
    for j, row in enumerate(rows):
        assert row["k"] == [1, 2, 4][j]
        assert np.isclose(row["accuracy"], (maj[:, j] - greedy).mean(), atol=1e-12)
        assert np.isclose(row["ci_low"], low[j], atol=1e-12) and np.isclose(row["ci_high"], high[j], atol=1e-12)


def test_paired_interval_is_narrower_than_the_unpaired_difference_on_correlated_data():
    rng = np.random.default_rng(11)
    difficulty = rng.random(60)
    greedy = (difficulty > 0.5).astype(float)
    maj = ((difficulty > 0.4) | (rng.random(60) < 0.05)).astype(float)[:, None]  # mostly the same problems right
    (row,) = paired_deltas({"maj": _estimates(maj)}, [8], greedy, seed=0)
    # unpaired: each side resampled on its own
    lo_m, hi_m = bootstrap_ci(maj, seed=1)
    lo_g, hi_g = bootstrap_ci(greedy[:, None], seed=2)
    unpaired_width = (hi_m[0] - lo_m[0]) + (hi_g[0] - lo_g[0])  # spread of the difference of two independent means, at least
    paired_width = row["ci_high"] - row["ci_low"]
    assert paired_width < 0.6 * np.sqrt((hi_m[0] - lo_m[0]) ** 2 + (hi_g[0] - lo_g[0]) ** 2) < unpaired_width
    assert row["ci_low"] > 0  # the paired interval sees the gain the unpaired intervals (which overlap) miss
    assert lo_m[0] < hi_g[0]


def test_aggregate_writes_paired_rows_and_prints_them(tmp_path):
    from jobs.aggregate import aggregate_run, summary_table

    def shard(path, texts_by_problem):
        rows = [{"problem_id": pid, "sample_idx": i, "text": t, "gold": gold, "num_tokens": 5}
                for pid, (gold, texts) in texts_by_problem.items() for i, t in enumerate(texts)]
        path.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), path / "part-0.parquet")

    run = tmp_path / "run"
    shard(run / "traces", {"a": ("1", ["The answer is 1."] * 3 + ["The answer is 2."]),
                           "b": ("5", ["The answer is 5."] * 2 + ["The answer is 6."] * 2),
                           "c": ("9", ["The answer is 3."] * 4)})
    shard(run / "greedy" / "traces", {"a": ("1", ["The answer is 2."]), "b": ("5", ["The answer is 5."]),
                                      "c": ("9", ["The answer is 9."])})
    result = aggregate_run(str(run), "number", "mean")
    rows = {(r["method"], r["k"]): r for r in result.curves}
    assert result.greedy == 2 / 3
    maj4 = rows[("maj", 4)]["accuracy"]
    assert np.isclose(rows[("maj_minus_greedy", 4)]["accuracy"], maj4 - 2 / 3)
    assert np.isclose(rows[("pass_minus_greedy", 4)]["accuracy"], 2 / 3 - 2 / 3)
    table = summary_table(result)
    assert "paired difference to greedy, points (95% CI at k=4):" in table
    assert "maj@k - greedy" in table and "pass@k - greedy" in table
    written = pq.read_table(run / "curves.parquet").to_pylist()
    assert {"maj_minus_greedy", "pass_minus_greedy"} <= {r["method"] for r in written}
