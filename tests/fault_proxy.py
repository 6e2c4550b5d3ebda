"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an OpenAI-compatible server, in a thread of the test.

Each request to a completions or chat endpoint takes the next fault of `faults` (then "ok"): "ok", "429", "500",
"slow" (answers after `slow_s`), "drop" (closes the connection unanswered) or "hang" (never answers);
`fail_seed` makes every request with that seed answer 500, and `hang_after` makes every request after that
many forwarded ones hang, as a server that stops answering does.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Optional

from aiohttp import ClientSession, web


class FaultProxy:
    """The proxy; `url` is its base URL, `seen` counts what it did."""

    def __init__(self, upstream: str, port: int, faults: list[str] = (), fail_seed: Optional[int] = None,
                 hang_after: Optional[int] = None, slow_s: float = 2.0):
        self.upstream, self.url = upstream.rstrip("/"), f"http://127.0.0.1:{port}/v1"
        self.faults, self.fail_seed, self.hang_after, self.slow_s = list(faults), fail_seed, hang_after, slow_s
        self.seen: Counter = Counter()
        self.loop = asyncio.new_event_loop()
        self.released = asyncio.Event()  # set by close(): hanging requests end
        app = web.Application()
        app.router.add_route("*", "/v1/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", port).start())
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        generation = request.path.endswith("completions")
        if generation:
            fault = self.faults.pop(0) if self.faults else "ok"
            if self.hang_after is not None and self.seen["forwarded"] >= self.hang_after:
                fault = "hang"
            if self.fail_seed is not None and (await request.json()).get("seed") == self.fail_seed:
                fault = "500"
            self.seen["forwarded" if fault == "ok" else fault] += 1
            if fault in ("429", "500"):
                return web.json_response({"error": {"message": f"injected {fault}"}}, status=int(fault))
            if fault == "drop":
                request.transport.close()
                return web.Response()
            if fault == "hang":
                await self.released.wait()
                return web.Response(status=503)
            if fault == "slow":
                await asyncio.sleep(self.slow_s)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with ClientSession() as session:
            async with session.request(request.method, self.upstream + request.path.removeprefix("/v1"),
                                       data=body, headers=headers) as upstream:
                return web.Response(body=await upstream.read(), status=upstream.status,
                                    content_type=upstream.content_type)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.released.set)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
