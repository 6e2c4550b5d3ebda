"""jobs.ingest on each harness's own file layout (tests/fixtures/ingest/, made by make_fixtures.py): the trace
schema, counts, idempotence, exact errors, the peers' own numbers reproduced, and every job on an imported run."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.errors import ConfigError
from jobs.aggregate import aggregate_run, track
from jobs.cli import compose
from jobs.compare import compare
from jobs.ensemble import ensemble
from jobs.export import export
from jobs.ingest import ingest, peer_lines
from problems.datasets import DatasetError
from storage import rundir
from storage.traces import TRACE_SCHEMA, read_columns, write_shard

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "ingest"
LM_EVAL = FIXTURES / "lm_eval" / "tiny-org__tiny-model"
JSONL_FIELDS = ("fields.responses=outputs", "fields.id=idx")
# format -> (extra overrides, problems, samples, model, prompts)
FORMATS = {
    "lm_eval": ((), 5, 32, "tiny-org/tiny-model", {"gsm8k_cot_self_consistency", "arith_self_consistency"}),
    "lighteval": ((), 3, 12, "tiny-org/tiny-model", {"lighteval|gsm8k|0"}),
    "nemo_skills": (("model_name=tiny-org/tiny-model",), 3, 12, "tiny-org/tiny-model", {"gsm8k"}),
    "jsonl": (JSONL_FIELDS, 3, 24, "unknown", {"samples"}),
}


def config(fmt: str, run_dir, *overrides: str, path=None):
    return compose(f"format={fmt}", f"path={path or FIXTURES / fmt}", f"run_dir={run_dir}", *overrides, config_name="ingest")


def imported(fmt: str, run_dir, *overrides: str) -> str:
    ingest(config(fmt, run_dir, *FORMATS[fmt][0], *overrides))
    return str(run_dir)


def peer_values(run_dir: str) -> dict[str, float]:
    return {m["name"]: m["value"] for m in json.loads((Path(run_dir) / "peer.json").read_text())["metrics"]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_imports_its_fixture_in_the_trace_schema_once(fmt, tmp_path):
    extra, problems, samples, model, prompts = FORMATS[fmt]
    run_dir = imported(fmt, tmp_path / "run")
    table = read_columns(run_dir, TRACE_SCHEMA.names)
    assert table.schema == TRACE_SCHEMA.remove_metadata()
    assert (table.num_rows, len(set(table["problem_id"].to_pylist()))) == (samples, problems)
    assert set(table["model"].to_pylist()) == {model} and set(table["prompt"].to_pylist()) == prompts
    assert set(table["run_id"].to_pylist()) == {json.loads((tmp_path / "run" / "run.json").read_text())["run_id"]}
    shards = sorted((tmp_path / "run" / "traces").iterdir())
    again = ingest(config(fmt, run_dir, *extra))  # the same files again: nothing added
    assert again.already and sorted((tmp_path / "run" / "traces").iterdir()) == shards
    assert read_columns(run_dir, ["problem_id", "sample_idx"]).num_rows == samples


def test_lm_eval_takes_each_doc_once_from_its_filter_lines_with_question_and_gold(tmp_path):
    table = read_columns(imported("lm_eval", tmp_path / "run"), ["problem_id", "sample_idx", "question", "gold", "temperature", "text"])
    first = [json.loads(line) for line in (LM_EVAL / "samples_gsm8k_cot_self_consistency_2026-01-02T10-20-30.123456.jsonl").open()][0]
    rows = [r for r in table.to_pylist() if r["problem_id"] == "gsm8k_cot_self_consistency/0"]
    assert [r["text"] for r in rows] == first["resps"][0]  # each repeat one sample, in order
    assert {(r["question"], r["gold"], r["temperature"]) for r in rows} == {(first["doc"]["question"], "18", 0.2)}


def test_another_file_into_the_same_run_dir_is_refused_naming_both(tmp_path):
    run_dir = imported("jsonl", tmp_path / "run")
    with pytest.raises(ConfigError) as error:
        ingest(config("nemo_skills", run_dir))
    sha256 = rundir.saved_config(run_dir)["ingest"]["sources"][0]["sha256"]
    assert str(error.value) == (f"run_dir={run_dir} holds an import of other files (samples.jsonl (sha256 {sha256[:12]}…)): "
                                "import these into another run_dir")


def test_a_small_shard_size_streams_many_shards_and_a_rerun_overwrites_them(tmp_path):
    run_dir = imported("jsonl", tmp_path / "run", "shard_rows=5")
    assert len(list((tmp_path / "run" / "traces").glob("ingest-*.parquet"))) == 5  # 24 samples, 5 per shard
    (tmp_path / "run" / "ingest.json").unlink()  # as if the first import had died before its end
    ingest(config("jsonl", run_dir, *JSONL_FIELDS, "shard_rows=5"))
    assert read_columns(run_dir, ["problem_id", "sample_idx"]).num_rows == 24


def test_lm_eval_numbers_are_its_own_first_k_votes_beside_marginal_exact_maj(tmp_path):
    run_dir = imported("lm_eval", tmp_path / "run")
    reported = json.loads(next(LM_EVAL.glob("results_*.json")).read_text())["results"]
    values = peer_values(run_dir)
    for task, metrics in reported.items():
        for metric in ("exact_match,score-first", "exact_match,maj@8", "exact_match,maj@4"):
            assert values[f"{task} {metric}"] == pytest.approx(metrics[metric])
    result = aggregate_run(run_dir, "auto", "mean")
    lines = peer_lines(run_dir, result.problems["problem_id"].to_pylist(), result.votes)
    by_name = {line.split("%")[0].rsplit(" ", 1)[0].strip(): line for line in lines[1:]}
    line = by_name["gsm8k_cot_self_consistency exact_match,maj@4"]
    assert "33.3%   marginal: first-4 vote 33.3%, exact maj@4 63.3%" in line  # one draw of 4 against all draws
    line = by_name["gsm8k_cot_self_consistency exact_match,maj@8"]
    assert "66.7%   marginal: first-8 vote 66.7%, exact maj@8 66.7%" in line  # all 8 samples: one draw only


def test_lighteval_maj_and_pass_are_reproduced_from_its_details(tmp_path):
    run_dir = imported("lighteval", tmp_path / "run")
    [results_file] = (FIXTURES / "lighteval" / "results").rglob("results_*.json")
    reported = json.loads(results_file.read_text())["results"]["lighteval|gsm8k|0"]
    values = peer_values(run_dir)
    assert values["lighteval|gsm8k|0 maj@n:n=4"] == pytest.approx(reported["maj@n:n=4"])
    result = aggregate_run(run_dir, "auto", "mean")
    lines = "\n".join(peer_lines(run_dir, result.problems["problem_id"].to_pylist(), result.votes))
    assert f"{100 * reported['maj@n:n=4']:.1f}%   marginal: first-4 vote {100 * reported['maj@n:n=4']:.1f}%" in lines
    assert f"{100 * reported['pass@k:k=2&n=4']:.1f}%   marginal: pass@2 {100 * reported['pass@k:k=2&n=4']:.1f}%" in lines


def test_lighteval_columns_without_dunders_read_the_same(tmp_path):
    [details] = (FIXTURES / "lighteval").rglob("details_*.parquet")
    table = pq.read_table(details)
    copy = tmp_path / "details" / "org" / "m" / details.parent.name / details.name
    copy.parent.mkdir(parents=True)
    pq.write_table(table.rename_columns([c.strip("_") for c in table.column_names]), copy)  # doc, metric, model_response
    a = read_columns(imported("lighteval", tmp_path / "a"), ["problem_id", "sample_idx", "text", "gold", "num_tokens"])
    ingest(config("lighteval", tmp_path / "b", path=tmp_path / "details"))
    assert read_columns(str(tmp_path / "b"), ["problem_id", "sample_idx", "text", "gold", "num_tokens"]).equals(a)
    assert set(read_columns(str(tmp_path / "b"), ["problem_id", "sample_idx", "model"])["model"].to_pylist()) == {"org/m"}


def test_nemo_skills_pass_numbers_are_reproduced_from_its_verdicts(tmp_path):
    run_dir = imported("nemo_skills", tmp_path / "run")
    reported = json.loads((FIXTURES / "nemo_skills" / "eval-results" / "metrics.json").read_text())["gsm8k"]
    result = aggregate_run(run_dir, "auto", "mean")
    by_k = {r["k"]: r["accuracy"] for r in result.curves if r["method"] == "pass"}
    assert by_k[1] == pytest.approx(reported["pass@1[avg-of-4]"]["symbolic_correct"] / 100)
    assert by_k[4] == pytest.approx(reported["pass@4"]["symbolic_correct"] / 100)
    assert peer_values(run_dir)["gsm8k pass@1[avg-of-4]"] == pytest.approx(by_k[1])


def test_an_imported_run_aggregates_as_the_same_samples_written_natively(tmp_path):
    run_dir = imported("jsonl", tmp_path / "imported")
    rows = [{"run_id": "native", "problem_id": str(line["idx"]), "question": line["question"], "gold": line["answer"],
             "sample_idx": i, "text": text}
            for line in map(json.loads, (FIXTURES / "jsonl" / "samples.jsonl").open()) for i, text in enumerate(line["outputs"])]
    write_shard(rows, str(tmp_path / "native"), "part-native")
    ours, theirs = aggregate_run(run_dir, "auto", "mean"), aggregate_run(str(tmp_path / "native"), "auto", "mean")
    strip = lambda curves: [(r["method"], r["k"], r["accuracy"], r["ci_low"], r["ci_high"]) for r in curves]  # noqa: E731
    assert strip(ours.curves) == strip(theirs.curves) and len(ours.curves) == 8
    assert ours.answers.select(["problem_id", "sample_idx", "canonical", "correct"]).equals(
        theirs.answers.select(["problem_id", "sample_idx", "canonical", "correct"]))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_malformed_line_fails_with_file_line_and_reason_in_every_format(tmp_path):
    good = (LM_EVAL / "samples_arith_self_consistency_2026-01-02T10-20-30.123456.jsonl").read_text().splitlines()[0]
    bad = write(tmp_path / "lm" / "samples_t_2026-01-02T10-20-30.123456.jsonl", good + "\n" + '{"doc_id": 1, "resps": [[1, 2]]\n')
    with pytest.raises(DatasetError, match=rf"^{bad}:2: malformed JSON \(Expecting ',' delimiter at column 32\)$"):
        ingest(config("lm_eval", tmp_path / "r1", path=bad))
    bad.write_text(good + "\n" + json.dumps({**json.loads(good), "doc_id": 1, "resps": [[0.5, True]]}) + "\n")
    with pytest.raises(DatasetError, match=rf"^{bad}:2: resps\[0\] is float, not text \(a task without generations\?\)$"):
        ingest(config("lm_eval", tmp_path / "r2", path=bad))

    rows = pq.read_table(next((FIXTURES / "lighteval").rglob("details_*.parquet"))).to_pylist()
    rows[1]["__doc__"]["gold_index"] = 3
    details = tmp_path / "le" / "details_lighteval|gsm8k|0_2026-01-02T10-20-30.123456.parquet"
    details.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), details)
    with pytest.raises(DatasetError, match=rf"^{details}:2: __doc__.gold_index 3 names none of its 1 choices$"):
        ingest(config("lighteval", tmp_path / "r3", path=details))

    seeds = sorted((FIXTURES / "nemo_skills" / "eval-results" / "gsm8k").glob("output-rs*.jsonl"))
    for seed in seeds:
        lines = seed.read_text().splitlines()
        write(tmp_path / "ns" / seed.name, "\n".join(lines[:2] if seed.name == "output-rs2.jsonl" else lines) + "\n")
    with pytest.raises(DatasetError, match=rf"^{tmp_path}/ns/output-rs2.jsonl: ends after 2 problems, but {tmp_path}/ns/output-rs0.jsonl lists more$"):
        ingest(config("nemo_skills", tmp_path / "r4", path=tmp_path / "ns"))

    papers = write(tmp_path / "papers.jsonl", '{"idx": 0, "question": "q", "answer": "1", "outputs": "just one"}\n')
    with pytest.raises(DatasetError, match=rf"^{papers}:1: outputs is str, not a list of texts$"):
        ingest(config("jsonl", tmp_path / "r5", *JSONL_FIELDS, path=papers))
    assert not any((tmp_path / f"r{i}" / "traces").exists() for i in range(1, 6))
    run_dir = imported("jsonl", tmp_path / "r5")  # the fixed file goes where the failed import was
    assert read_columns(run_dir, ["problem_id", "sample_idx"]).num_rows == 24


@pytest.mark.parametrize("override, message", [
    ("format=csv", "error: format='csv': must be one of ('lm_eval', 'lighteval', 'nemo_skills', 'jsonl')"),
    ("shard_rows=0", "error: shard_rows=0: must be >= 1"),
    ("path=/nowhere", "error: path=/nowhere: no such file or folder"),
])
def test_the_command_names_a_bad_key_in_one_line(override, message, tmp_path):
    args = [f"path={FIXTURES / 'jsonl'}", "format=jsonl", f"run_dir={tmp_path}/run", override]
    done = subprocess.run([sys.executable, "-m", "jobs.ingest", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [message]


def test_the_commands_import_then_aggregate_with_replay_and_print_the_peers_numbers(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "jobs.ingest", "format=lm_eval", f"path={FIXTURES / 'lm_eval'}",
                           f"run_dir={run_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"[ingest] 5 problems, 32 samples from 2 file(s) -> {run_dir}/traces (1 shards)" in done.stderr
    done = subprocess.run([sys.executable, "-m", "jobs.aggregate", f"run_dir={run_dir}", "tracking=none", "adaptive=esc"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "lm_eval's own numbers (its extraction, grading and sample order), beside marginal's on the same samples:" in done.stdout
    assert "adaptive rule" in done.stdout and (run_dir / "adaptive.parquet").is_file()


def test_ensemble_export_and_compare_work_on_imported_runs(tmp_path):
    run_dir = imported("jsonl", tmp_path / "imported", "fields.id=null")
    result = aggregate_run(run_dir, "auto", "mean")
    native = str(tmp_path / "native")  # another model's samples on the same problems, run natively
    rows = [{"run_id": "n", "problem_id": pid, "gold": gold, "sample_idx": i, "text": f"The answer is {gold}."}
            for pid, gold in zip(result.problems["problem_id"].to_pylist(), result.problems["gold"].to_pylist()) for i in range(4)]
    write_shard(rows, native, "part-0")
    aggregate_run(native, "auto", "mean")
    curves = ensemble([run_dir, native], "auto", None, seed=0)
    assert {r["run"] for r in curves} == {"ensemble", "imported", "native"}
    assert next(r for r in curves if r["run"] == "native" and r["k"] == 4)["accuracy"] == 1.0

    manifest = export(run_dir, str(tmp_path / "sft"), max_per_problem=2)
    records = [json.loads(line) for line in (tmp_path / "sft" / "sft.jsonl").open()]
    assert manifest["records"] == len(records) > 0 and records[0]["messages"][0]["role"] == "user"

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    from mlflow.tracking import MlflowClient
    MlflowClient(uri).create_experiment("imported", artifact_location=str(tmp_path / "artifacts"))
    tracking = compose("run_dir=x", f"tracking.uri={uri}", "tracking.experiment=imported", config_name="aggregate")
    for run in (run_dir, native):
        track(tracking, aggregate_run(run, "auto", "mean"), rundir.saved_config(run) or {"run_dir": run}, run, "aggregate")
    comparison = compare(uri, "imported", "", ["maj"], tmp_path / "out")
    assert comparison.table.num_rows == 2 and comparison.paired.num_rows > 0
