"""The engine replica: a Ray actor holding one `vllm.LLM`, serving work units and keeping their rows as shards.

It loads the model in `__init__` and serves a whole work unit in `run`. Each sample's row is kept as it
finishes (`actors.shard_writer`: written within `cluster.flush_s` seconds), so texts never travel through
the driver and a crash loses only the samples of the last seconds. It is a threaded actor: several units
run at once, their requests sharing one continuously batched engine (`actors.engine_loop`). It knows
nothing of Hydra or MLflow.
"""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace
from typing import Any, Iterator, Optional

import ray

from actors.decodings import DECODINGS
from actors.engine_loop import EngineLoop
from actors.precision import resolved_engine_kwargs
from actors.shard_writer import Flush, ShardWriter
from actors.work import Prompt, Request, SamplingSpec, WorkUnit
from actors.work_left import Lengths
from analysis.answer_confidence import answer_confidence, token_offsets


def sampling_params(spec: SamplingSpec, seed: int, max_tokens: int):
    """vLLM sampling parameters for one sample (its output returned once finished, as `LLM.generate` asks)."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    return SamplingParams(n=1, temperature=spec.temperature, top_p=spec.top_p, max_tokens=max_tokens, seed=seed,
                          logprobs=spec.logprobs or None, stop=list(spec.stop), output_kind=RequestOutputKind.FINAL_ONLY)


def load_engine(model_path: str, engine_kwargs: dict[str, Any]) -> Any:
    """The `LLMEngine` of a `vllm.LLM` for the model (the engine loop calls it on the thread that steps it)."""
    from vllm import LLM

    return LLM(model=model_path, **engine_kwargs).llm_engine


def max_num_seqs(engine: Any) -> int:
    """The engine's batch: the most sequences one step runs."""
    return engine.vllm_config.scheduler_config.max_num_seqs


class EngineReplica:
    """One vLLM engine replica."""

    clock = staticmethod(time.perf_counter)  # how `run` times a unit's generation
    params = staticmethod(sampling_params)  # one sample's vLLM parameters (a benchmark forces lengths here)

    def __init__(self, model_path: str, engine_kwargs: dict[str, Any], flush: Flush):
        kwargs, self.precision = resolved_engine_kwargs(engine_kwargs)
        self.writer = ShardWriter(flush)
        self.lengths = Lengths()
        self.engine = EngineLoop(lambda: load_engine(model_path, kwargs), max_num_seqs)
        self.tokenizer = self.engine.engine.get_tokenizer()
        self.tokenizer_lock = threading.Lock()  # units tokenize on their own threads
        self.max_model_len = self.engine.engine.model_config.max_model_len
        self.dtype = str(self.engine.engine.model_config.dtype).removeprefix("torch.")  # `auto` on GPU resolved
        self.name = replica_name()

    def ready(self) -> dict[str, Any]:
        """Once its engine is loaded: the replica's name, the dtype it runs, its CPU's ISA and any warning."""
        return {"replica": self.name, "dtype": self.dtype, "isa": self.precision.isa, "warning": self.precision.warning}

    def activity(self, seen: int = 0) -> dict[str, Any]:
        """The replica's name; what its engine is doing now (requests in it, tokens so far); the tokens its
        running samples are expected to add and a new sample's expected length (actors.work_left); rows finished
        but not yet written; and the shards it wrote after the first `seen` ((run_dir, path, rows) each): what
        the driver counts as kept."""
        tokens_left, sample_tokens = self.lengths.left(self.engine.running())
        return {"replica": self.name, **self.engine.activity(), "tokens_left": tokens_left,
                "sample_tokens": sample_tokens, "pending": self.writer.added - self.writer.written,
                "shards": self.writer.shards_since(seen)}

    def run(self, unit: WorkUnit) -> dict[str, Any]:
        """Generate every sample of `unit`, keeping each row as it finishes; return once all are on disk, with
        its run_dir, counts and timings (the unit's own, overlapping other units'; the replica's so far: its
        engine's mean running batch and its CPU seconds writing shards)."""
        start = self.clock()
        rows = tokens = errors = 0
        for row in self.generate(unit.requests, unit.spec):
            self.keep(unit, row)
            rows, tokens, errors = rows + 1, tokens + row["num_tokens"], errors + (row["error"] is not None)
        generated = self.clock()
        self.writer.sync()  # its last rows, now: its result means all of them are on disk
        return {
            "run_dir": unit.run_dir,
            "replica": self.name,
            "rows": rows,
            "tokens": tokens,
            "errors": errors,
            "generate_s": generated - start,
            "write_s": self.writer.write_s,
            "mean_batch": self.engine.mean_batch(),
        }

    def keep(self, unit: WorkUnit, row: dict[str, Any]) -> None:
        """Hand a finished sample's row, with the unit's run columns, to the shard writer."""
        self.writer.add(unit.run_dir, {**unit.run.as_row(), **row})
        if row["error"] is None:
            self.lengths.add(row["num_tokens"])

    def generate(self, requests: list[Request], spec: SamplingSpec) -> Iterator[dict[str, Any]]:
        """One trace row per request, as each finishes; a prompt too long for the model fails alone, with its reason."""
        from vllm.inputs import TokensPrompt

        branching = DECODINGS[spec.decoding].branched
        rows, ready = self._admit(requests, spec, min_room=2 if branching else 1)
        yield from rows
        if branching:
            yield from self._branch(ready, spec)
        elif ready:
            prompts = [TokensPrompt(prompt_token_ids=ids) for _, ids in ready]
            params = [self.params(spec, r.seed, min(spec.max_tokens, self.max_model_len - len(ids))) for r, ids in ready]
            for index, out in self.engine.stream(prompts, params):
                request, ids = ready[index]
                yield self._row(request, spec, len(ids), out.outputs[0])

    def _admit(self, requests: list[Request], spec: SamplingSpec,
               min_room: int) -> tuple[list[dict[str, Any]], list[tuple[Request, list[int]]]]:
        """Error rows for prompts that leave under `min_room` tokens of context; (request, prompt ids) for the rest."""
        rows, ready = [], []
        prompt_ids: dict[str, list[int]] = {}
        for request in requests:
            if request.problem_id not in prompt_ids:
                prompt_ids[request.problem_id] = self._tokenize(request.prompt)
            ids = prompt_ids[request.problem_id]
            if self.max_model_len - len(ids) < min_room:
                reason = f"prompt has {len(ids)} tokens; the model's context (max_model_len) is {self.max_model_len}"
                rows.append(self._row(request, spec, len(ids), error=reason))
            else:
                ready.append((request, ids))
        return rows, ready

    def _branch(self, ready: list[tuple[Request, list[int]]], spec: SamplingSpec) -> Iterator[dict[str, Any]]:
        """CoT-decoding: each problem's top-k first tokens, each branch continued greedily, its row kept as it
        finishes; a request's sample_idx is its branch's rank. All branches of all problems go to the engine in
        one batch."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        problems = {request.problem_id: ids for request, ids in ready}
        if not problems:
            return
        final = RequestOutputKind.FINAL_ONLY
        first = SamplingParams(max_tokens=1, temperature=0.0, logprobs=spec.branches, output_kind=final)
        outputs = self.engine.generate([TokensPrompt(prompt_token_ids=ids) for ids in problems.values()],
                                       [first] * len(problems))
        steps = {pid: out.outputs[0].logprobs[0] for pid, out in zip(problems, outputs)}
        heads = [(request, ids, steps[request.problem_id], _ranked(steps[request.problem_id])[request.sample_idx])
                 for request, ids in ready]
        params = [SamplingParams(temperature=0.0, max_tokens=min(spec.max_tokens, self.max_model_len - len(ids)) - 1,
                                 logprobs=max(2, spec.logprobs), stop=list(spec.stop), output_kind=final)
                  for _, ids, _, _ in heads]
        for index, out in self.engine.stream([TokensPrompt(prompt_token_ids=ids + [token]) for _, ids, _, token in heads],
                                             params):
            request, ids, step, token = heads[index]
            yield self._branch_row(request, spec, len(ids), step, token, out.outputs[0])

    def _branch_row(self, request: Request, spec: SamplingSpec, prompt_tokens: int, step: dict, token: int,
                    rest: Any) -> dict[str, Any]:
        """The row of one branch: its first token then the greedy rest, with its rank and answer confidence Δ."""
        steps = [step] + list(rest.logprobs)
        branch = SimpleNamespace(
            text=(step[token].decoded_token or "") + rest.text,
            token_ids=[token] + list(rest.token_ids),
            finish_reason=rest.finish_reason,
            cumulative_logprob=step[token].logprob + (rest.cumulative_logprob or 0.0),
            logprobs=steps,
        )
        pieces = [s[t].decoded_token or "" for t, s in zip(branch.token_ids, steps)]
        tops = [[lp.logprob for lp in s.values()] for s in steps]
        delta = answer_confidence(branch.text, token_offsets(branch.text, pieces), tops, spec.answer_format)
        return {**self._row(request, spec, prompt_tokens, branch), "branch_rank": request.sample_idx,
                "answer_confidence": delta}

    def _tokenize(self, prompt: Prompt) -> list[int]:
        with self.tokenizer_lock:
            if isinstance(prompt, str):
                return self.tokenizer.encode(prompt)
            text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            return self.tokenizer.encode(text, add_special_tokens=False)

    def _row(self, request: Request, spec: SamplingSpec, prompt_tokens: int, completion: Any = None,
             error: Optional[str] = None) -> dict[str, Any]:
        row = {
            "decoding": spec.decoding,
            "problem_id": request.problem_id,
            "question": request.question,
            "gold": request.gold,
            "sample_idx": request.sample_idx,
            "seed": request.seed,
            "temperature": spec.temperature,
            "top_p": spec.top_p,
            "prompt_tokens": prompt_tokens,
            "replica": self.name,
            "error": error,
            "text": "",
            "num_tokens": 0,
            "finish_reason": "error",
        }
        if completion is not None:
            row.update(
                text=completion.text,
                num_tokens=len(completion.token_ids),
                finish_reason=completion.finish_reason or "length",
                cumulative_logprob=completion.cumulative_logprob,
                **_logprob_columns(completion, spec.logprobs),
            )
        return row


def replica_name() -> str:
    """`<node address>:<pid>`, the `replica` column: the node's address tells nodes apart."""
    return f"{ray.util.get_node_ip_address()}:{os.getpid()}"


def _ranked(step: dict) -> list[int]:
    """The candidate token ids of one step's logprobs, most likely first."""
    return sorted(step, key=lambda token: step[token].rank)


def _logprob_columns(completion: Any, k: int) -> dict[str, Any]:
    """Per-token logprobs of the sampled tokens and, when k > 1, the top-k at each step."""
    if not k or completion.logprobs is None:
        return {}
    chosen = [step[token].logprob for token, step in zip(completion.token_ids, completion.logprobs)]
    if k == 1:
        return {"token_logprobs": chosen}
    top = [sorted((lp.logprob for lp in step.values()), reverse=True)[:k] for step in completion.logprobs]
    return {"token_logprobs": chosen, "top_logprobs": top}
