"""The vLLM engine's own code (admission, sampling, CoT-decoding branches, rows) and the replica's shard, on a fake
engine.

vLLM is replaced by a stand-in module of two plain constructors and the engine loop by a fake whose outputs are
shaped like vLLM's, so these paths run in CI without the engine (the engine-marked tests run them on the real one).
"""

import math
import sys
import threading
import types
from types import SimpleNamespace

import pytest

from actors.replica import EngineReplica
from actors.vllm_engine import VllmEngine
from actors.shard_writer import Flush, ShardWriter
from actors.work import Request, RunColumns, SamplingSpec, WorkUnit
from actors.work_left import Lengths
from storage.traces import open_traces

PIECES = [" The", " answer", " is", " 4", "."]  # every continuation; its step t puts p=0.8 on PIECES[t], 0.1 on "x"


def step(chosen: int, piece: str, p: float = 0.8) -> dict:
    return {chosen: SimpleNamespace(logprob=math.log(p), rank=1, decoded_token=piece),
            999: SimpleNamespace(logprob=math.log(0.1), rank=2, decoded_token="x")}


class FakeEngine:
    """`generate` and `stream` as the replica's engine loop answers them (vLLM's outputs, one per prompt; streamed
    last first, as a batch's samples finish out of order); max_tokens=1 gives the first step's top candidates."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params):
        params = params if isinstance(params, list) else [params] * len(prompts)
        self.calls.append(params)
        return [SimpleNamespace(outputs=[self._output(p)]) for p in params]

    def stream(self, prompts, params):
        outputs = self.generate(prompts, params)
        return reversed(list(enumerate(outputs)))

    def mean_batch(self) -> float:
        """The mean number of prompts per call: each call stands for one engine step of its whole batch."""
        return sum(map(len, self.calls)) / len(self.calls)

    def _output(self, params):
        if params.max_tokens == 1:  # CoT-decoding's first step: the top-k first tokens, ranked
            first = {100 + r: SimpleNamespace(logprob=math.log(0.5 / (r + 1)), rank=r + 1, decoded_token=f"T{r}")
                     for r in range(params.logprobs)}
            return SimpleNamespace(logprobs=[first])
        steps = [step(i + 1, piece) for i, piece in enumerate(PIECES)]
        return SimpleNamespace(text="".join(PIECES), token_ids=list(range(1, len(PIECES) + 1)), finish_reason="stop",
                               cumulative_logprob=len(PIECES) * math.log(0.8), logprobs=steps)


class FakeTokenizer:
    def encode(self, text, add_special_tokens=True):
        return list(range(len(text.split())))

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return " ".join(m["content"] for m in messages)


@pytest.fixture
def replica(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.sampling_params = types.ModuleType("vllm.sampling_params")
    vllm.sampling_params.SamplingParams = lambda **kwargs: SimpleNamespace(**kwargs)
    vllm.sampling_params.RequestOutputKind = SimpleNamespace(FINAL_ONLY="final only")
    vllm.inputs = types.ModuleType("vllm.inputs")
    vllm.inputs.TokensPrompt = lambda prompt_token_ids: SimpleNamespace(prompt_token_ids=prompt_token_ids)
    for module in (vllm, vllm.sampling_params, vllm.inputs):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    engine = VllmEngine.__new__(VllmEngine)  # everything __init__ sets, without loading a model
    engine.loop, engine.tokenizer, engine.max_model_len = FakeEngine(), FakeTokenizer(), 12
    engine.tokenizer_lock = threading.Lock()
    replica = EngineReplica.__new__(EngineReplica)
    replica.engine, replica.name = engine, "node:1"
    replica.writer = ShardWriter(Flush(seconds=60, rows=1000))
    replica.lengths = Lengths()
    return replica


def spec(**overrides) -> SamplingSpec:
    return SamplingSpec(**{"temperature": 0.7, "top_p": 0.95, "max_tokens": 8, "logprobs": 2, "decoding": "sample",
                           "branches": 3, "answer_format": "number", **overrides})


def test_samples_get_their_seed_their_logprobs_and_a_too_long_prompt_fails_alone(replica):
    requests = [Request("p", "q", "4", "two words", 0, 11), Request("p", "q", "4", "two words", 1, 12),
                Request("long", "q", "4", " ".join(["w"] * 12), 0, 13)]
    rows = {(r["problem_id"], r["sample_idx"]): r for r in replica.engine.generate(requests, spec())}
    assert list(rows) == [("long", 0), ("p", 1), ("p", 0)]  # the refused prompt first, then as they finish
    [params] = replica.engine.loop.calls
    assert [(p.seed, p.max_tokens, p.logprobs) for p in params] == [(11, 8, 2), (12, 8, 2)]  # room: 12 - 2 >= 8
    assert all(p.output_kind == "final only" for p in params)  # the engine loop waits for finished outputs only
    assert rows["p", 0]["text"] == "".join(PIECES) and rows["p", 0]["num_tokens"] == 5
    assert rows["p", 0]["token_logprobs"] == pytest.approx([math.log(0.8)] * 5)
    assert rows["p", 0]["top_logprobs"][0] == pytest.approx([math.log(0.8), math.log(0.1)])
    assert rows["long", 0]["error"] == "prompt has 12 tokens; the model's context (max_model_len) is 12"
    assert rows["long", 0]["finish_reason"] == "error" and rows["long", 0]["text"] == ""


def test_cot_decoding_branches_on_the_ranked_first_tokens_with_their_answer_confidence(replica):
    requests = [Request("p", "q", "4", "Q: two plus two", i, 0) for i in range(3)]
    rows = sorted(replica.engine.generate(requests, spec(decoding="cot_decoding", temperature=0.0, top_p=1.0)),
                  key=lambda r: r["sample_idx"])
    [first], rest = replica.engine.loop.calls  # one prompt for the problem's first step, then its branches in one batch
    assert first.max_tokens == 1 and first.logprobs == 3
    assert [p.max_tokens for p in rest] == [7, 7, 7]  # the rest of the budget after the branched token
    assert [r["branch_rank"] for r in rows] == [r["sample_idx"] for r in rows] == [0, 1, 2]
    assert [r["text"] for r in rows] == [f"T{rank}" + "".join(PIECES) for rank in range(3)]
    assert all(r["answer_confidence"] == pytest.approx(0.8 - 0.1) for r in rows)  # the margin of " 4", the answer
    assert [r["num_tokens"] for r in rows] == [6, 6, 6]


def test_a_unit_s_rows_are_on_disk_when_it_returns_with_the_run_s_columns(replica, tmp_path):
    unit = WorkUnit(str(tmp_path), RunColumns("run1", "fake", "cot"), spec(),
                    [Request("p", "q", "4", "two words", i, i) for i in range(2)])
    replica.clock = iter([100.0, 102.5]).__next__  # the clock as generation starts, then as it ends
    result = replica.run(unit)
    assert (result["run_dir"], result["rows"], result["tokens"], result["errors"]) == (str(tmp_path), 2, 10, 0)
    assert result["generate_s"] == 2.5 and result["mean_batch"] == 2.0  # the unit's 2 requests went in one batch
    assert 0 < result["write_s"] == replica.writer.write_s  # the shard written before it returned
    assert replica.lengths.finished == {5: 2}  # what the replica's estimate of tokens left learns from
    table = open_traces(str(tmp_path)).to_table()
    assert set(zip(*(table[c].to_pylist() for c in ("run_id", "model", "prompt", "decoding", "replica")))) == \
        {("run1", "fake", "cot", "sample", result["replica"])}  # the result names the replica its rows name
