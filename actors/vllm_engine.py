"""The in-process vLLM engine (`engine=vllm`): one `vllm.LLM` per replica, stepped by its own thread.

Prompts are tokenized here (chat template, then no extra special tokens), so a prompt too long for the model
fails alone before it is sent. CoT-decoding asks the engine for each problem's first-token top-k, then
continues every branch greedily in one batch.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

from actors.decodings import DECODINGS
from actors.embedded_model import check_model, resolve_model_path
from actors.engine_loop import EngineLoop, Looped
from actors.precision import resolved_engine_kwargs
from actors.rows import Completion, trace_row
from actors.work import Prompt, Ready, Request, SamplingSpec, Supports
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


def engine_args(config: dict[str, Any]) -> dict[str, Any]:
    """vllm.LLM's arguments for a run: the model's, the run's seed, then conf/engine/vllm.yaml's for every device
    and for this one (a replica with GPUs, or CPU only)."""
    model, engine = config["model"], config["engine"]
    on_gpu = bool(config["cluster"]["gpus_per_replica"])
    args = {"dtype": model["dtype"], "max_model_len": model["max_model_len"],
            "tensor_parallel_size": model["tensor_parallel_size"], "seed": config["sampling"]["seed"],
            **engine["args"], **engine["gpu" if on_gpu else "cpu"]}
    if on_gpu and model["tensor_parallel_size"] > 1:  # its workers, one per GPU, fill the replica's placement group
        args.setdefault("distributed_executor_backend", "ray")
    return args


class VllmEngine(Looped):
    """A vllm.LLM in the replica, for any number of concurrent `generate` calls (actors.engine_loop)."""

    runs_model = True
    supports = Supports(seeds=True, logprobs=True, top_logprobs=True, branches=True, prompt_ids=True)
    params = staticmethod(sampling_params)  # one sample's vLLM parameters (a benchmark forces lengths here)

    @staticmethod
    def settings(config: dict[str, Any]) -> dict[str, Any]:
        """The model's local folder (ModelNotFoundError if none) and vllm.LLM's arguments."""
        return {"model": check_model(resolve_model_path(config["model"]["path"])), "args": engine_args(config)}

    def __init__(self, settings: dict[str, Any]):
        self.requested = settings["args"].get("dtype")
        kwargs, self.precision = resolved_engine_kwargs(settings["args"])
        self.loop = EngineLoop(lambda: load_engine(settings["model"], kwargs), max_num_seqs)
        self.tokenizer = self.loop.engine.get_tokenizer()
        self.tokenizer_lock = threading.Lock()  # units tokenize on their own threads
        self.max_model_len = self.loop.engine.model_config.max_model_len
        self.dtype = str(self.loop.engine.model_config.dtype).removeprefix("torch.")  # `auto` on GPU resolved

    def ready(self) -> Ready:
        return Ready(f"dtype {self.dtype} (model.dtype={self.requested}), CPU {self.precision.isa}", self.supports,
                     self.precision.warning, {"dtype": self.dtype, "isa": self.precision.isa})

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
            for index, out in self.loop.stream(prompts, params):
                request, ids = ready[index]
                yield trace_row(request, spec, len(ids), completion(out.outputs[0]))

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
                rows.append(trace_row(request, spec, len(ids), error=reason))
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
        outputs = self.loop.generate([TokensPrompt(prompt_token_ids=ids) for ids in problems.values()],
                                     [first] * len(problems))
        steps = {pid: out.outputs[0].logprobs[0] for pid, out in zip(problems, outputs)}
        heads = [(request, ids, steps[request.problem_id], _ranked(steps[request.problem_id])[request.sample_idx])
                 for request, ids in ready]
        params = [SamplingParams(temperature=0.0, max_tokens=min(spec.max_tokens, self.max_model_len - len(ids)) - 1,
                                 logprobs=max(2, spec.logprobs), stop=list(spec.stop), output_kind=final)
                  for _, ids, _, _ in heads]
        for index, out in self.loop.stream([TokensPrompt(prompt_token_ids=ids + [token]) for _, ids, _, token in heads],
                                           params):
            request, ids, step, token = heads[index]
            yield branch_row(request, spec, len(ids), step, token, out.outputs[0])

    def _tokenize(self, prompt: Prompt) -> list[int]:
        with self.tokenizer_lock:
            if isinstance(prompt, str):
                return self.tokenizer.encode(prompt)
            text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            return self.tokenizer.encode(text, add_special_tokens=False)


def branch_row(request: Request, spec: SamplingSpec, prompt_tokens: int, step: dict, token: int,
               rest: Any) -> dict[str, Any]:
    """The row of one branch: its first token then the greedy rest, with its rank and answer confidence Δ."""
    steps = [step] + list(rest.logprobs)
    token_ids = [token] + list(rest.token_ids)
    pieces = [s[t].decoded_token or "" for t, s in zip(token_ids, steps)]
    tops = [sorted((lp.logprob for lp in s.values()), reverse=True) for s in steps]
    text = pieces[0] + rest.text
    branch = Completion(text, len(token_ids), rest.finish_reason, step[token].logprob + (rest.cumulative_logprob or 0.0),
                        [s[t].logprob for t, s in zip(token_ids, steps)], tops)
    delta = answer_confidence(text, token_offsets(text, pieces), tops, spec.answer_format)
    return {**trace_row(request, spec, prompt_tokens, branch), "branch_rank": request.sample_idx,
            "answer_confidence": delta}


def completion(out: Any) -> Completion:
    """A vLLM CompletionOutput as a Completion: with logprobs, the sampled tokens' and each step's, best first."""
    chosen = tops = None
    if out.logprobs is not None:
        chosen = [step[token].logprob for token, step in zip(out.token_ids, out.logprobs)]
        tops = [sorted((lp.logprob for lp in step.values()), reverse=True) for step in out.logprobs]
    return Completion(out.text, len(out.token_ids), out.finish_reason, out.cumulative_logprob, chosen, tops)


def _ranked(step: dict) -> list[int]:
    """The candidate token ids of one step's logprobs, most likely first."""
    return sorted(step, key=lambda token: step[token].rank)
