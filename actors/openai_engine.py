"""Any OpenAI-compatible server as the engine (`engine=openai`): `vllm serve`, SGLang, llama.cpp, a hosted API.

Each replica holds one async client (the `openai` library: timeouts, and retries of 429, 5xx, timeouts and
dropped connections with exponential backoff and jitter) on an event loop of its own, with at most
`engine.max_concurrency` requests in flight; `replicas=N` spreads a run's requests over N such clients. A
request the server keeps refusing becomes an error row with the server's reason; a server that stops
answering fails the run, naming its URL, once a request has used up its tries. The API key is read from the
environment variable `engine.api_key_env` names, on the replica's node, and goes nowhere else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from typing import Any, Iterator, Optional

from actors.decodings import DECODINGS
from actors.embedded_model import check_model, resolve_model_path
from actors.rows import Completion, trace_row
from actors.work import Prompt, Ready, ReplicaStartError, Request, SamplingSpec, Supports
from analysis.answer_confidence import answer_confidence, token_offsets
from analysis.errors import ConfigError, MarginalError

APIS = ("completions", "chat")
PROBE_PROMPT = "Name a colour, an animal and a number, at random:"


class ServerUnreachableError(MarginalError, ConnectionError):
    """The server at engine.base_url did not answer a request within all its tries."""


def check_settings(config: dict[str, Any]) -> None:
    """Raise ConfigError naming the first engine.* key out of range, or what this run asks that the API cannot do."""
    e, prompt = config["engine"], config["prompt"]

    def check(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"engine.{key}={e[key]!r}: {rule}")

    check(str(e["base_url"] or "").startswith(("http://", "https://")), "base_url",
          "must be the server's http(s) URL, e.g. http://127.0.0.1:8000/v1")
    check(e["api"] in APIS, "api", f"must be one of {APIS}")
    check(e["max_concurrency"] >= 1, "max_concurrency", "must be >= 1")
    check(e["timeout_s"] > 0, "timeout_s", "must be > 0 (seconds)")
    check(e["retries"] >= 0, "retries", "must be >= 0")
    if e["api"] == "chat":
        check(prompt["chat"], "api", f"sends chat messages; prompt={prompt['name']} is a completion prompt "
                                     f"(prompt.chat=false): use engine.api=completions")
        check(not DECODINGS[config["decoding"]].branched, "api",
              f"decoding={config['decoding']} continues prompt + each first token, which a chat API cannot: "
              f"use engine.api=completions")
    elif prompt["chat"]:
        check(e["tokenizer"], "api", f"prompt={prompt['name']} is a chat prompt: engine.api=completions needs "
                                     f"engine.tokenizer (its chat template), or use engine.api=chat")


def sample_params(spec: SamplingSpec, seed: int) -> dict[str, Any]:
    """One sample's request parameters (the API's own names)."""
    return {"max_tokens": spec.max_tokens, "temperature": spec.temperature, "top_p": spec.top_p, "seed": seed,
            "stop": list(spec.stop) or None, "logprobs": spec.logprobs}


class OpenAIEngine:
    """An async HTTP client of one OpenAI-compatible server, for any number of concurrent `generate` calls."""

    runs_model = False
    params = staticmethod(sample_params)  # one sample's request parameters (a benchmark forces lengths here)

    @staticmethod
    def settings(config: dict[str, Any]) -> dict[str, Any]:
        """engine.* checked, with engine.tokenizer resolved to a local folder (ModelNotFoundError if none)."""
        check_settings(config)
        tokenizer = config["engine"]["tokenizer"]
        return {**config["engine"], "tokenizer": check_model(resolve_model_path(tokenizer)) if tokenizer else None}

    def __init__(self, settings: dict[str, Any]):
        import openai

        self.url, self.api = settings["base_url"], settings["api"]
        self.timeout_s, self.retries = settings["timeout_s"], settings["retries"]
        key_env = settings["api_key_env"]
        if key_env and not os.environ.get(key_env):
            raise ReplicaStartError(f"engine.api_key_env={key_env}: that environment variable is not set "
                                    f"where the replica runs")
        self.tokenizer = None
        if settings["tokenizer"]:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(settings["tokenizer"])
        self.tokenizer_lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="http-client", daemon=True).start()
        self.client = openai.AsyncOpenAI(base_url=self.url, api_key=os.environ.get(key_env) if key_env else "none",
                                         timeout=self.timeout_s, max_retries=self.retries)
        self.slots = self._call(_semaphore(settings["max_concurrency"]))
        self.in_flight, self.generated, self.busy_s, self.batch_s = 0, 0, 0.0, 0.0
        self.caps: dict[int, int] = {}  # id of a request in flight -> its max_tokens
        self.counter_lock, self.changed = threading.Lock(), time.perf_counter()
        self.model = settings["model"] or self._call(self._only_model())
        self.seeds, logprobs = self._call(self._probe())
        self.supports = Supports(seeds=self.seeds, logprobs=logprobs, top_logprobs=logprobs,
                                 branches=logprobs and self.api == "completions", prompt_ids=False)

    def ready(self) -> Ready:
        warning = None if self.seeds else (
            f"the server at {self.url} ignores per-request seeds (the same seed gave two different texts): "
            f"samples are not reproducible, and a resumed run draws its missing samples anew")
        return Ready(f"server {self.url}, model {self.model}, {self.api} API", self.supports, warning)

    def activity(self) -> dict[str, int]:
        return {"in_flight": self.in_flight, "generated": self.generated}

    def running(self) -> list[tuple[int, int]]:
        with self.counter_lock:
            return [(0, cap) for cap in self.caps.values()]  # a reply comes whole: no tokens are seen before it

    def mean_batch(self) -> float:
        return self.batch_s / self.busy_s if self.busy_s else 0.0

    def generate(self, requests: list[Request], spec: SamplingSpec) -> Iterator[dict[str, Any]]:
        """One trace row per request, as each reply comes."""
        if DECODINGS[spec.decoding].branched:
            yield from self._branch(requests, spec)
            return
        futures = [asyncio.run_coroutine_threadsafe(self._sample(r, spec), self.loop) for r in requests]
        yield from _as_completed(futures)

    # the event loop's side

    def _call(self, coroutine: Any) -> Any:
        """Run `coroutine` on the client's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def _only_model(self) -> str:
        """engine.model left null: the server's one model, else an error naming what it serves."""
        served = [m.id for m in (await self._send(self.client.models.list)).data]
        if len(served) != 1:
            raise ReplicaStartError(f"engine.model is not set and the server at {self.url} serves {served}: "
                                    f"set engine.model to one of them")
        return served[0]

    async def _probe(self) -> tuple[bool, bool]:
        """Whether the server honours seeds (the same seed twice at temperature 1 gives the same text) and gives
        top-2 logprobs."""
        import openai

        prompt = [{"role": "user", "content": PROBE_PROMPT}] if self.api == "chat" else PROBE_PROMPT
        try:
            texts = [_text((await self._send(self._create, prompt, max_tokens=12, temperature=1.0, top_p=1.0,
                                             seed=1234)).choices[0]) for _ in range(2)]
        except openai.APIStatusError as error:
            raise ReplicaStartError(f"engine.base_url={self.url}: a first request, to model {self.model} by the "
                                    f"{self.api} API, was refused: {refusal(error)}") from None
        try:
            reply = await self._send(self._create, prompt, max_tokens=1, temperature=0.0, logprobs=2)
        except openai.BadRequestError:
            return texts[0] == texts[1], False
        _, tops = _logprobs(reply.choices[0])
        return texts[0] == texts[1], bool(tops) and len(tops[0]) >= 2

    async def _send(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """`call`, its tries used up: a server that never answered fails the run, naming its URL."""
        import openai

        try:
            return await call(*args, **kwargs)
        except openai.APIConnectionError as error:  # APITimeoutError too: no reply within engine.timeout_s
            raise ServerUnreachableError(
                f"engine.base_url={self.url}: no answer after {self.retries + 1} tries of up to {self.timeout_s:g}s "
                f"each (engine.retries, engine.timeout_s): {error.__class__.__name__}: {error}") from None

    async def _create(self, prompt: Prompt, **params: Any) -> Any:
        """One completion of `prompt` by the server's completions or chat API."""
        if self.api == "chat":
            logprobs = params.pop("logprobs", 0)
            if logprobs:
                params.update(logprobs=True, **({"top_logprobs": logprobs} if logprobs > 1 else {}))
            return await self.client.chat.completions.create(model=self.model, messages=prompt, **params)
        if not params.get("logprobs"):
            params.pop("logprobs", None)
        return await self.client.completions.create(model=self.model, prompt=self._text_prompt(prompt), **params)

    async def _request(self, prompt: Prompt, **params: Any) -> tuple[Any, Optional[str]]:
        """The server's reply to one request, or the reason it refused it once all tries were used (an error row)."""
        import openai

        async with self.slots:
            key = id(params)
            self._count(+1, key, params["max_tokens"])
            try:
                return await self._send(self._create, prompt, **params), None
            except openai.APIStatusError as error:  # 4xx (a 429 or 5xx only after its retries)
                return None, refusal(error)
            finally:
                self._count(-1, key, 0)

    async def _sample(self, request: Request, spec: SamplingSpec) -> dict[str, Any]:
        reply, error = await self._request(request.prompt, **self.params(spec, request.seed))
        if reply is None:
            return trace_row(request, spec, None, error=error)
        choice = reply.choices[0]
        done = self._completion(choice, reply.usage)
        self.generated += done.num_tokens
        return trace_row(request, spec, reply.usage.prompt_tokens if reply.usage else None, done)

    def _branch(self, requests: list[Request], spec: SamplingSpec) -> Iterator[dict[str, Any]]:
        """CoT-decoding: each problem's first-token top-k (one request each), then each branch's prompt + token
        continued greedily; a request's sample_idx is its branch's rank."""
        firsts = {r.problem_id: r.prompt for r in requests}

        async def first_steps() -> list[tuple[Any, Optional[str]]]:
            return await asyncio.gather(*(self._request(prompt, max_tokens=1, temperature=0.0, logprobs=spec.branches)
                                          for prompt in firsts.values()))

        heads = dict(zip(firsts, self._call(first_steps())))
        futures = [asyncio.run_coroutine_threadsafe(self._continue(r, spec, heads[r.problem_id]), self.loop)
                   for r in requests]
        yield from _as_completed(futures)

    async def _continue(self, request: Request, spec: SamplingSpec, head: tuple[Any, Optional[str]]) -> dict[str, Any]:
        """One branch: its first token (of rank sample_idx), then the greedy rest, with its answer confidence Δ."""
        reply, error = head
        if reply is None:
            return trace_row(request, spec, None, error=error)
        first = reply.choices[0].logprobs.top_logprobs[0]
        ranked = sorted(first.items(), key=lambda item: -item[1])
        if request.sample_idx >= len(ranked):
            return trace_row(request, spec, None, error=f"the server gave {len(ranked)} first tokens, not "
                                                        f"sampling.top_k_branches={spec.branches}")
        token, logprob = ranked[request.sample_idx]
        rest, error = await self._request(self._text_prompt(request.prompt) + token, max_tokens=spec.max_tokens - 1,
                                          temperature=0.0, stop=list(spec.stop) or None, logprobs=max(2, spec.logprobs))
        if rest is None:
            return trace_row(request, spec, None, error=error)
        choice = rest.choices[0]
        tail = self._completion(choice, rest.usage)
        pieces = [token] + list(choice.logprobs.tokens)
        tops = [sorted(first.values(), reverse=True)] + (tail.top_logprobs or [])
        text = token + choice.text
        branch = Completion(text, 1 + tail.num_tokens, tail.finish_reason, logprob + (tail.cumulative_logprob or 0.0),
                            [logprob] + (tail.token_logprobs or []), tops)
        self.generated += branch.num_tokens
        delta = answer_confidence(text, token_offsets(text, pieces), tops, spec.answer_format)
        return {**trace_row(request, spec, reply.usage.prompt_tokens if reply.usage else None, branch),
                "branch_rank": request.sample_idx, "answer_confidence": delta}

    def _completion(self, choice: Any, usage: Any) -> Completion:
        """A reply's choice as a Completion: its tokens counted by the server (usage), else by engine.tokenizer."""
        text = _text(choice)
        if usage is not None and usage.completion_tokens is not None:
            num_tokens = usage.completion_tokens
        elif self.tokenizer is not None:
            with self.tokenizer_lock:
                num_tokens = len(self.tokenizer.encode(text, add_special_tokens=False))
        else:
            raise ReplicaStartError(f"the server at {self.url} reports no token usage: set engine.tokenizer so "
                                    f"that samples' tokens are counted here")
        chosen, tops = _logprobs(choice)
        cumulative = sum(chosen) if chosen else None
        return Completion(text, num_tokens, choice.finish_reason, cumulative, chosen, tops)

    def _text_prompt(self, prompt: Prompt) -> str:
        """A completions API's prompt: the text itself, or chat messages in engine.tokenizer's chat template."""
        if isinstance(prompt, str):
            return prompt
        with self.tokenizer_lock:
            return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def _count(self, change: int, key: int, cap: int) -> None:
        """Requests in flight, and their number integrated over time (the mean batch the server saw from here)."""
        with self.counter_lock:
            now = time.perf_counter()
            if self.in_flight:
                self.busy_s += now - self.changed
                self.batch_s += self.in_flight * (now - self.changed)
            self.changed, self.in_flight = now, self.in_flight + change
            if change > 0:
                self.caps[key] = cap
            else:
                self.caps.pop(key, None)


def refusal(error: Any) -> str:
    """The reason a server gave for refusing a request (an APIStatusError): its status and its own message."""
    detail = error.body.get("message") if isinstance(error.body, dict) else None
    return f"the server answered {error.status_code}: {detail or error.message}"


async def _semaphore(size: int) -> asyncio.Semaphore:
    """A semaphore made on the loop that uses it."""
    return asyncio.Semaphore(size)


def _as_completed(futures: list[concurrent.futures.Future]) -> Iterator[dict[str, Any]]:
    """Each future's row as it is done; the first error (a server gone) stops the rest."""
    try:
        for future in concurrent.futures.as_completed(futures):
            yield future.result()
    finally:
        for future in futures:
            future.cancel()


def _text(choice: Any) -> str:
    """The text of a completions or chat choice."""
    return choice.message.content or "" if hasattr(choice, "message") else choice.text


def _logprobs(choice: Any) -> tuple[Optional[list[float]], Optional[list[list[float]]]]:
    """The sampled tokens' logprobs and each step's top logprobs (best first), from either API's reply."""
    logprobs = choice.logprobs
    if logprobs is None:
        return None, None
    if hasattr(logprobs, "content"):  # chat: a list of tokens, each with its alternatives
        steps = logprobs.content or []
        return ([step.logprob for step in steps],
                [sorted((alt.logprob for alt in step.top_logprobs or []), reverse=True) for step in steps])
    tops = [sorted((top or {}).values(), reverse=True) for top in logprobs.top_logprobs or []]
    return list(logprobs.token_logprobs or []), tops
