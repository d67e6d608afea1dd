"""A real HTTP upstream that records every request and answers what a test tells it to.

For what the emulator, being faithful, never does: a gateway answering 200 with an HTML
page, an upstream whose every path (admin pages included) must be watched, one that hangs
on one path (``delay``) or echoes a request's key into its error.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a hung upstream: longer than the timeout)


@dataclass
class RecordingUpstream:
    answers: list[Answer] = field(default_factory=list)  # consumed in order; the last repeats
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, raw path)
    bodies: list[bytes] = field(default_factory=list)  # the request bodies, in order
    base_url: str = ""
    by_path: dict[str, Answer] = field(default_factory=dict)  # fixed answers for some paths

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.raw_path))
        # A whole request, as a real upstream reads it before answering.
        self.bodies.append(await request.read())
        answer = self.by_path.get(request.path)
        if answer is None:
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return web.Response(
            status=answer.status,
            body=answer.body,
            content_type=answer.content_type,
            headers=answer.headers,
        )


@contextmanager
def recording_upstream(*answers: Answer) -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream(list(answers) or [Answer(body=b"{}")])
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", upstream.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        upstream.base_url = f"http://127.0.0.1:{port}"
        runner_box.append(runner)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner_box[0].cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10), "the recording upstream did not start"
    try:
        yield upstream
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
