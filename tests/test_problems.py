"""Datasets: the arithmetic generator, the three real benchmarks, and files with a field mapping."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from jobs.cli import compose
from problems.datasets import DatasetError, arith_problems, load_problems
from tests.conftest import SHARED_DATA as DATA, needs_shared_data as needs_data


def test_arith_is_reproducible_and_seeded():
    a, b, c = arith_problems(20, 3, seed=0), arith_problems(20, 3, seed=0), arith_problems(20, 3, seed=1)
    assert a == b and a != c
    assert len({p.problem_id for p in a}) == 20


@pytest.mark.parametrize("steps", [1, 2, 4, 9])
def test_arith_gold_is_the_sum_of_the_chain(steps):
    for problem in arith_problems(25, steps, seed=7):
        amounts = [int(line.split("= ")[-1].rstrip(".")) for line in problem.solution.split(". The ")[1:-1]]
        assert len(amounts) == steps  # one operation per step
        assert problem.solution.endswith(f"The answer is {problem.gold}.")
        assert int(problem.gold) == sum(int(x) for x in problem.solution.split("Together: ")[1].split(" =")[0].split(" + "))


def test_arith_train_split_is_disjoint_from_test():
    cfg = compose("dataset=arith").dataset
    test = {p.question for p in load_problems(cfg)}
    train = {p.question for p in load_problems(cfg, split="train")}
    assert test and train and not test & train


@needs_data
@pytest.mark.parametrize("name, rows, sample_gold", [("gsm8k", 1319, "18"), ("math500", 500, "\\left( 3, \\frac{\\pi}{2} \\right)"), ("svamp", 1000, "145.0")])
def test_real_datasets_load_with_stable_ids_and_gold(name, rows, sample_gold):
    cfg = compose(f"dataset={name}", f"data_dir={DATA}").dataset
    problems = load_problems(cfg)
    assert len(problems) == rows
    assert len({p.problem_id for p in problems}) == rows
    assert problems[0].gold == sample_gold
    assert all(p.question and p.gold for p in problems)
    assert [p.problem_id for p in load_problems(cfg)] == [p.problem_id for p in problems]


@needs_data
def test_limit_and_svamp_question_joins_body_and_question():
    cfg = compose("dataset=svamp", "dataset.limit=3").dataset  # data_dir from MARGINAL_DATA_DIR (tests/conftest.py)
    problems = load_problems(cfg)
    assert len(problems) == 3
    first = json.loads((DATA / "svamp/test.jsonl").read_text().splitlines()[0])
    assert problems[0].question == f"{first['Body'].strip()} {first['Question'].strip()}"
    assert problems[0].problem_id == first["ID"]


def file_cfg(path, **fields):
    cfg = compose("dataset=file", f"dataset.path={path}").dataset
    return OmegaConf.merge(cfg, fields)


def test_any_jsonl_or_parquet_with_a_field_mapping(tmp_path):
    rows = [{"id": f"q{i}", "prompt": f"What is {i}+1?", "target": i + 1} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):
        problems = load_problems(file_cfg(tmp_path / name, question_fields=["prompt"], answer_field="target", id_field="id"))
        assert [(p.problem_id, p.question, p.gold) for p in problems] == [(r["id"], r["prompt"], str(r["target"])) for r in rows]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"question": "a", "answer": "1"}\n{"question": "b", "answer": \n', r"d.jsonl:2: malformed JSON"),
        (b'{"question": "a"}\n', r"d.jsonl:1: missing field 'answer'"),
        (b"", r"d.jsonl: empty file"),
        (b'{"question": "a", "answer": "1", "id": 1}\n{"question": "b", "answer": "2", "id": 1}\n', r"duplicate problem_id '1'"),
        (b'{"question": "caf\xe9", "answer": "1"}\n', r"d.jsonl:1: not UTF-8"),
        (b'[1, 2]\n', r"d.jsonl:1: expected a JSON object"),
    ],
)
def test_malformed_files_name_file_line_and_reason(tmp_path, content, message):
    (tmp_path / "d.jsonl").write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        load_problems(file_cfg(tmp_path / "d.jsonl", id_field="id" if b'"id"' in content else None))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nope.jsonl: no such file"):
        load_problems(file_cfg(tmp_path / "nope.jsonl"))
