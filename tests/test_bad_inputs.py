"""Bad datasets, configs and run directories: each fails the command at once with one exact line.

Every case runs `python -m jobs.sample` as a user would and checks: exit status 2, stderr is the
single line `error: <message>`, no Ray was started, and no traces/ was written.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.cli import compose
from jobs.config import resolved
from storage import rundir

ROOT = Path(__file__).resolve().parents[1]

BAD_FILES = {
    "malformed.jsonl": b'{"question": "a", "answer": "1"}\n{"question": "b", "answer": }\n',
    "missing.jsonl": b'{"question": "a"}\n',
    "empty.jsonl": b"",
    "duplicate.jsonl": b'{"id": "x", "question": "a", "answer": "1"}\n{"id": "x", "question": "b", "answer": "2"}\n',
    "latin1.jsonl": b'{"question": "caf\xe9", "answer": "1"}\n',
    "list.jsonl": b"[1, 2]\n",
    "blank-question.jsonl": b'{"question": "  ", "answer": "1"}\n',
    "blank-gold.jsonl": b'{"question": "a", "answer": ""}\n',
    "a-file": b"not a folder",
}

# (case, overrides, the exact stderr line); {data} is the folder of BAD_FILES, {run} the run_dir, and a
# line ending in "..." is a prefix (the options that follow change as conf/ grows).
CASES = [
    ("malformed JSON", ["dataset=file", "dataset.path={data}/malformed.jsonl"],
     "error: {data}/malformed.jsonl:2: malformed JSON (Expecting value at column 29)"),
    ("missing field", ["dataset=file", "dataset.path={data}/missing.jsonl"],
     "error: {data}/missing.jsonl:1: missing field 'answer' (has ['question'])"),
    ("empty file", ["dataset=file", "dataset.path={data}/empty.jsonl"], "error: {data}/empty.jsonl: empty file"),
    ("duplicate ids", ["dataset=file", "dataset.path={data}/duplicate.jsonl", "dataset.id_field=id"],
     "error: dataset=file: duplicate problem_id 'x' (rows 1 and 2)"),
    ("non-UTF-8 bytes", ["dataset=file", "dataset.path={data}/latin1.jsonl"],
     "error: {data}/latin1.jsonl:1: not UTF-8 (invalid continuation byte at byte 17)"),
    ("a line that is a list", ["dataset=file", "dataset.path={data}/list.jsonl"],
     "error: {data}/list.jsonl:1: expected a JSON object, got list"),
    ("empty question", ["dataset=file", "dataset.path={data}/blank-question.jsonl"],
     "error: {data}/blank-question.jsonl:1: empty question"),
    ("empty gold", ["dataset=file", "dataset.path={data}/blank-gold.jsonl"],
     "error: {data}/blank-gold.jsonl:1: empty gold answer in field 'answer'"),
    ("no such file", ["dataset=file", "dataset.path={data}/nope.jsonl"], "error: {data}/nope.jsonl: no such file"),
    ("file dataset without a path", ["dataset=file"],
     "error: dataset=file: no path for the test split (dataset.path / dataset.train_path)"),
    ("negative n", ["sampling.n=-1"], "error: sampling.n=-1: must be >= 1"),
    ("n not a number", ["sampling.n=many"],
     "error: Error merging override sampling.n=many (Value 'many' of type 'str' could not be converted to Integer)"),
    ("top_p=0", ["sampling.top_p=0"], "error: sampling.top_p=0.0: must be in (0, 1]"),
    ("top_p=1.5", ["sampling.top_p=1.5"], "error: sampling.top_p=1.5: must be in (0, 1]"),
    ("temperature=-1", ["sampling.temperature=-1"], "error: sampling.temperature=-1.0: must be >= 0"),
    ("max_tokens >= max_model_len", ["sampling.max_tokens=2048"],
     "error: sampling.max_tokens=2048: must be below the model's context (model.max_model_len=2048)"),
    ("replicas=0", ["replicas=0"], "error: replicas=0: must be >= 1"),
    ("dataset.limit=0", ["dataset.limit=0"], "error: dataset.limit=0: must be >= 1 or null"),
    ("unit_size=0", ["cluster.unit_size=0"], "error: cluster.unit_size=0: must be >= 1"),
    ("unknown answer.format", ["answer.format=latex"],
     "error: answer.format='latex': must be one of ('gsm8k', 'math', 'number', 'auto', 'text', 'choice')"),
    ("negative answer.audit", ["answer.audit=-1"], "error: answer.audit=-1: must be >= 0 (answers to print per type)"),
    ("unknown decoding", ["decoding=beam"], "error: decoding='beam': must be one of ('sample', 'cot_decoding')"),
    ("unknown key", ["sampling.bogus=1"],
     "error: Could not override 'sampling.bogus'. To append to your config use +sampling.bogus=1 "
     "(Key 'bogus' not in 'SamplingConfig')"),
    ("unknown prompt", ["prompt=nope"],
     "error: In 'config': Could not find 'prompt/nope' Available options in 'prompt': ..."),
    ("unknown model", ["model=nope"],
     "error: In 'config': Could not find 'model/nope' Available options in 'model': ..."),
    ("few-shot prompt without a train split", ["prompt.shots=2"],
     "error: dataset.train_path=None: prompt=cot needs exemplars from a train split"),
    ("model path that does not exist", ["model.path=/nonexistent"],
     "error: model.path='/nonexistent': no Hugging Face model folder (config.json) there"),
    ("run_dir under a regular file", ["run_dir={data}/a-file/run"],
     "error: run_dir={data}/a-file/run: cannot write there: [Errno 20] Cannot create directory "
     "'{data}/a-file/run/lease'. Detail: [errno 20] Not a directory"),  # its lease: the job's first write
    ("run_dir of a different run", ["sampling.temperature=1.0"],
     "error: run_dir={run} holds a run with a different config (sampling.temperature: 0.7 -> 1.0); use another run_dir"),
]


@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name, content in BAD_FILES.items():
        (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize("overrides, line", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_fails_at_once_with_one_exact_line_and_starts_nothing(tmp_path, data, overrides, line):
    run = tmp_path / "run"
    rundir.prepare(str(run), resolved(compose(f"run_dir={run}")))  # an earlier run, sampled at temperature 0.7
    args = [o.format(data=data) for o in overrides]
    # A Ray the job starts makes its session folder under RAY_TMPDIR at once; without RAY_ADDRESS it joins none.
    ray_tmp = tmp_path / "ray-tmp"
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": str(ray_tmp)}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "jobs.sample", f"run_dir={run}", "tracking=none", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    [printed], expected = result.stderr.splitlines(), line.format(data=data, run=run)
    assert printed.startswith(expected[:-3]) if expected.endswith("...") else printed == expected
    assert time.monotonic() - start < 60
    assert not ray_tmp.exists() and not (run / "traces").exists()
