"""watches.Stream against a small HTTP server that speaks the API server's LIST and WATCH:
paged LIST, events split across chunks, bookmarks, resume from the last resourceVersion,
and a re-LIST when the history is gone (410), as an ERROR event or as the HTTP status."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from clip_operator.watches import Stream

PATH = "/apis/mememaker.io/v1alpha1/namespaces/ns/clipjobs"


def obj(name: str, rv: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"u-{name}", "resourceVersion": str(rv)}}


def line(kind: str, o: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": o}).encode() + b"\n"


class FakeApi:
    """LIST pages and scripted WATCH responses; records what each request asked for."""

    def __init__(self, watches: list[Any]) -> None:
        self.watches = watches  # per WATCH request: a list of byte chunks, or an HTTP status
        self.lists: list[dict[str, str]] = []
        self.watched: list[dict[str, str]] = []
        self.done = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        if query.get("watch") != "1":
            self.lists.append(query)
            if not query.get("continue"):
                return web.json_response(
                    {"metadata": {"continue": "page2"}, "items": [obj("a", 10)]}
                )
            return web.json_response(
                {"metadata": {"resourceVersion": "20"}, "items": [obj("b", 20)]}
            )
        if self.done.is_set():
            return web.Response(status=503)
        self.watched.append(query)
        if not self.watches:  # the script is played: the test stops the stream now
            self.done.set()
            return web.Response(status=503)
        script = self.watches.pop(0)
        if isinstance(script, int):
            return web.Response(status=script, text=json.dumps({"kind": "Status", "code": script}))
        resp = web.StreamResponse()
        await resp.prepare(request)
        for chunk in script:
            await resp.write(chunk)
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp


class Kube:
    def __init__(self, host: str, session: aiohttp.ClientSession) -> None:
        self.host, self._session = host, session

    def headers(self) -> dict[str, str]:
        return {}

    def session(self, purpose: str = "requests") -> aiohttp.ClientSession:
        return self._session

    async def get(self, path: str, query: list[tuple[str, str]], timeout: float = 30) -> Any:
        async with self._session.get(self.host + path, params=query) as resp:
            return await resp.json()


def run(watches: list[Any]) -> tuple[FakeApi, list[tuple[str | None, str, str]]]:
    api = FakeApi(watches)
    seen: list[tuple[str | None, str, str]] = []

    async def main() -> None:
        app = web.Application()
        app.router.add_get(PATH, api.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as session:
            stream = Stream(
                Kube(f"http://127.0.0.1:{port}", session),  # type: ignore[arg-type]
                PATH,
                "app=x",
                lambda kind, o: seen.append(
                    (kind, o["metadata"]["name"], o["metadata"]["resourceVersion"])
                ),
            )
            task = asyncio.create_task(stream.run())
            await asyncio.wait_for(api.done.wait(), 10)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()

    asyncio.run(main())
    return api, seen


def test_list_in_pages_then_watch_from_its_version_across_chunk_boundaries() -> None:
    modified = line("MODIFIED", obj("a", 21))
    api, seen = run(
        [
            [modified[:7], modified[7:] + line("ADDED", obj("c", 22))[:-1], b"\n"],
            [line("BOOKMARK", {"metadata": {"resourceVersion": "30"}})],
        ]
    )
    assert seen == [
        (None, "a", "10"),
        (None, "b", "20"),
        ("MODIFIED", "a", "21"),
        ("ADDED", "c", "22"),
    ]
    assert [q.get("continue") for q in api.lists] == [None, "page2"]
    assert all(q["labelSelector"] == "app=x" for q in api.lists + api.watched)
    # Each WATCH resumes from the last version seen (a bookmark counts); no second LIST.
    assert [q["resourceVersion"] for q in api.watched] == ["20", "22", "30"]
    assert all(q["allowWatchBookmarks"] == "true" for q in api.watched)


def test_history_gone_lists_again_as_error_event_or_http_410() -> None:
    gone = line("ERROR", {"kind": "Status", "code": 410, "message": "too old"})
    api, seen = run([[line("MODIFIED", obj("a", 21)), gone], 410])
    # LIST, WATCH (one event, then 410 as an event), LIST, WATCH (410 status), LIST, WATCH.
    assert len(api.lists) == 6  # three LISTs of two pages each
    assert [q.get("resourceVersion") for q in api.watched] == ["20", "20", "20"]
    assert [s for s in seen if s[0] is None] == [(None, "a", "10"), (None, "b", "20")] * 3
    assert ("MODIFIED", "a", "21") in seen


def test_a_refused_watch_is_retried_from_the_same_version() -> None:
    api, seen = run([500, [line("DELETED", obj("b", 23))]])
    assert len(api.lists) == 2  # one LIST (two pages): a 500 is no reason to list again
    assert [q["resourceVersion"] for q in api.watched] == ["20", "20", "23"]
    assert seen[-1] == ("DELETED", "b", "23")
