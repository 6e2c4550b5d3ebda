"""Every benchmark runs in CI at a small size, so none rots; the checks are on what they report, never on time.

Full sizes and the measured figures are in docs/benchmarks.md.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from actors.precision import engine_precision

ROOT = Path(__file__).resolve().parents[1]


def bench(name: str, *args: str, timeout_s: float = 600) -> str:
    """Run `python -m benchmarks.<name> args...` from the project folder; return its stdout."""
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout_s)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def figures(pattern: str, text: str) -> list[float]:
    """Every number `pattern`'s one group matches in `text`."""
    return [float(m.replace(",", "")) for m in re.findall(pattern, text)]


def test_bench_scale_streams_both_shapes_with_a_driver_far_under_a_gigabyte(tmp_path):
    out = bench("bench_scale", "--samples", "4000", "--replicas", "2", "--problems", "40", "--unit-size", "200")
    assert "1 x 4000 samples on 2 replicas" in out and "40 x 100 samples on 2 replicas" in out
    peaks = figures(r"driver peak RSS (\d+) MB", out) + figures(r"resume scan of [\d.]+s (\d+) MB", out)
    assert len(peaks) == 4 and all(0 < mb < 1024 for mb in peaks), out
    walls, rates = figures(r"wall ([\d.]+)s \(", out), figures(r"\(([\d,]+) samples/s;", out)
    assert len(walls) == len(rates) == 2, out
    assert all(wall * rate == pytest.approx(4000, rel=0.01) for wall, rate in zip(walls, rates)), out  # samples / wall


def test_bench_shards_times_every_read_before_and_after_a_compaction_that_changes_none():
    out = bench("bench_shards", "--samples", "20000", "--shard-rows", "100")
    assert "20,000 samples in 200 shards of 100: writing" in out
    assert "compaction: " in out and "into 1 shard(s); every read returns the same" in out
    for read in ("resume scan", "aggregate read", "dataset count"):
        assert len(figures(rf"{read}: +([\d.]+)s in 200 shards", out)) == 1, out


def test_bench_curves_keeps_the_monte_carlo_error_under_a_tenth_of_a_point():
    out = bench("bench_curves", "--problems", "60", "--samples", "128", "--compare", "10")
    [stderr_points] = figures(r"standard error of maj@k, worst k: ([\d.]+) points", out)
    assert stderr_points < 0.1, out
    assert len(figures(r"maj@(\d+) ", out)) == 8  # k = 1, 2, 4, ..., 128


def test_bench_extract_reports_both_rates_and_their_ratio():
    out = bench("bench_extract", "--problems", "20", "--samples", "50")
    assert "texts: 1,000 (20 problems x 50 samples)" in out
    [one] = figures(r"1 worker: +([\d,]+) samples/s", out)
    [(cores, every)] = re.findall(r"(\d+) workers: +([\d,]+) samples/s", out)
    [speed_up] = figures(r"speed-up: +([\d.]+)x", out)
    assert int(cores) == os.cpu_count(), out
    assert speed_up == pytest.approx(float(every.replace(",", "")) / one, rel=0.01, abs=0.01), out  # the two rates' ratio


@pytest.mark.engine
def test_bench_engine_gives_the_job_and_the_raw_engine_the_same_samples_in_alternating_pairs():
    out = bench("bench_engine", "--problems", "2", "--samples", "4", "--max-tokens", "16", "cluster.unit_size=8",
                "model=smollm2_135m", "--repeats", "2")
    assert "pair 1 of 2 (direct first" in out and "pair 2 of 2 (job first" in out, out
    direct_tokens = figures(r"direct LLM.generate: (\d+) tokens", out)
    job_tokens = figures(r"jobs.sample, 1 replica: (\d+) tokens", out)
    assert len(direct_tokens) == 2 and direct_tokens == job_tokens and min(job_tokens) > 0, out
    assert out.count("identical texts: 8/8") == 2, out
    job_line = r"jobs.sample, 1 replica: \d+ tokens in ([\d.]+)s \(replica start ([\d.]+)s, then ([\d.]+)s"
    job_lines = re.findall(job_line, out)
    assert len(job_lines) == 2, out
    for wall, start, after in job_lines:
        assert float(wall) - float(start) == pytest.approx(float(after), abs=0.15), out
    walls = {side: figures(pattern + r": \d+ tokens in ([\d.]+)s", out)
             for side, pattern in (("direct", "direct LLM.generate"), ("job", "jobs.sample, 1 replica"))}
    [ratio] = figures(r"\nratio ([\d.]+)", out)  # pooled: both sides' tokens over their summed seconds
    assert ratio == pytest.approx((sum(job_tokens) / sum(walls["job"])) / (sum(direct_tokens) / sum(walls["direct"])),
                                  rel=0.02), out


@pytest.mark.engine
def test_bench_dtype_measures_each_dtype_with_its_greedy_accuracy_and_says_what_auto_picks():
    out = bench("bench_dtype", "--dtype", "bfloat16,float32", "--problems", "2", "--samples", "2", "--tokens", "8",
                "model=smollm2_135m", "sampling.max_tokens=32")
    rows = re.findall(r"^(bfloat16|float32) +[\d.]+ +(\d) of 2 +([\d.]+) +([\d.]+)", out, re.M)
    assert [r[0] for r in rows] == ["bfloat16", "float32"], out
    assert all(float(greedy) > 0 and float(sampled) > 0 for _, _, greedy, sampled in rows)
    picked = re.search(r"auto resolves to (\w+) here; fastest measured: (\w+)", out)
    assert picked and picked.group(1) == engine_precision("auto").dtype, out


@pytest.mark.engine
def test_bench_engine_forces_every_long_tail_length_on_both_sides():
    from benchmarks.bench_engine import forced_length, planned_requests
    from jobs.cli import compose

    out = bench("bench_engine", "--workload", "long_tail", "--problems", "2", "--samples", "4", "--max-tokens", "48",
                "cluster.unit_size=2", "cluster.max_inflight=4", "model=smollm2_135m")
    requests = planned_requests(compose("dataset.limit=2", "sampling.n=4"))
    expected = sum(min(48, forced_length(r.seed)) for r in requests)
    [direct_tokens] = figures(r"direct LLM.generate: (\d+) tokens", out)
    [job_tokens] = figures(r"jobs.sample, 1 replica: (\d+) tokens", out)
    assert direct_tokens == job_tokens == expected, out
    [batch] = figures(r"jobs.sample.*engine batch ([\d.]+)", out)
    assert batch > 2, out  # units of 2 shared the engine


def test_the_peer_comparison_reads_every_repeat_and_votes_like_lm_eval_with_its_extractions(tmp_path):
    """A samples file as lm-eval logs it (one request per problem holding all repeats, one line per filter)."""
    import json

    from benchmarks.bench_lm_eval import FILTERS, compare_votes, lm_eval_answer

    texts = ["2 + 3 = 5. The answer is 5.", "so the answer is 5", "2 + 2 = 4", "The answer is 7. Check: 7"]
    votes = {"strict": "[invalid]", "flexible": "7"}  # strict: 2 of 4 invalid, lm-eval's vote counts them
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps({"doc": {"id": "p0"}, "resps": [texts], "filtered_resps": [votes[name]],
                                        "filter": name}) + "\n" for name in FILTERS))
    assert [lm_eval_answer(t, *FILTERS["strict"]) for t in texts] == ["5", None, None, "7"]
    assert [lm_eval_answer(t, *FILTERS["flexible"]) for t in texts] == ["5.", "5", "4", "7"]
    rows = compare_votes(path, "number")
    assert [(r["answered"], r["lm_eval"]) for r in rows["strict"]] == [(2, None)]
    assert [r["answered"] for r in rows["flexible"]] == [4]
    assert rows["strict"][0]["ours"] == rows["flexible"][0]["ours"] == "5"  # ours reads 'so the answer is 5' too


def test_bench_grading_agrees_with_exact_match_and_counts_anagrams_graded_right(tmp_path):
    import json

    rows = [  # (answer the task extracted, gold, the task's exact-match verdict)
        ('"snta".', "snat", False), ("Snat", "snat", True), ("melon", "lemon", False), ("Yes.", "yes", True),
        ("No, it cannot.", "yes", False), ("eaeo", "eaeo", True),
        ("C or D.", "C", True),  # the task read its first letter; a hedge between two options is no answer to us
    ]
    path = tmp_path / "released.jsonl"
    path.write_text("".join(json.dumps({"extracted": a, "gold": g, "correct": c, "text": f"So the answer is {a}"}) + "\n"
                            for a, g, c in rows))
    out = bench("bench_grading", str(path), "--show", "3")
    [line] = [line for line in out.splitlines() if line.startswith("released")]
    assert line.split()[1:] == ["7", "85.71%", "85.71%", "0/0"], out
    assert out.count("ours wrong, task right: answer") == 2 and "'C or D.'" in out, out


def test_bench_ingest_holds_the_same_memory_for_a_log_ten_times_larger():
    # Shards of 1,000 samples, smaller than either log: the import holds one at a time, whatever the log's size.
    out = bench("bench_ingest", "--samples", "20000", "--repeats", "16", "--shard-rows", "1000")
    assert "lm_eval log of 2,000 samples" in out and "lm_eval log of 20,000 samples" in out, out
    peaks = figures(r"peak RSS ([\d,]+) MB", out)
    assert len(peaks) == 2 and all(0 < mb < 1024 for mb in peaks), out
    small, large = peaks
    # Measured: the same peak to 1 MB (179 MB both). Holding the 20,000 samples at once (one shard of them) adds
    # 27 MB; 10 MB leaves room for noise.
    assert large - small <= 10, out
