"""A local fake of the Slack Web API that records every call it receives.

It runs an aiohttp server on 127.0.0.1 in a thread of its own, returns canned
results for the Web API methods the gateway calls, and can respond with 429
and Retry-After or fail on request, so tests see what the gateway sends to Slack without
any traffic leaving the machine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_USER_ID = "UBOT0001"
BOT_ID = "BBOT0001"
TEAM_ID = "T0EXAMPLE"
BOT_TOKEN = "xoxb-test-token"


@dataclass
class SlackCall:
    """One request the fake received: the method name, its parameters and headers."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    answered: int = 200


@dataclass
class _Failure:
    method: str
    status: int
    retry_after: int | None
    error: str
    count: int


@dataclass
class SlackFake:
    """The fake's state: recorded calls, users, channel members and failures."""

    users: dict[str, str] = field(default_factory=dict)
    channel_members: list[str] = field(default_factory=list)
    group_members: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    calls: list[SlackCall] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    socket_envelopes: list[dict[str, Any]] = field(default_factory=list)
    socket_acks: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""
    _failures: list[_Failure] = field(default_factory=list)
    _outage: bool = False
    _ts: Any = field(default_factory=lambda: itertools.count(1))
    _loop: asyncio.AbstractEventLoop | None = None
    _socket: web.WebSocketResponse | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def api_url(self) -> str:
        """Return the base URL that AsyncWebClient(base_url=...) takes."""
        return f"{self.base_url}/api/"

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int | None = 30,
        error: str = "ratelimited",
        count: int = 1,
    ) -> None:
        """Respond to the next COUNT calls of METHOD with STATUS (429 carries Retry-After)."""
        with self._lock:
            self._failures.append(_Failure(method, status, retry_after, error, count))

    def set_outage(self, down: bool) -> None:
        """Respond to every call with 503 while DOWN is true."""
        self._outage = down

    def named(self, method: str) -> list[dict[str, Any]]:
        """Return the parameters of every successful call of METHOD, oldest first."""
        return [c.params for c in list(self.calls) if c.method == method and c.answered == 200]

    def posts(self) -> list[dict[str, Any]]:
        """Return the parameters of every chat.postMessage that succeeded."""
        return self.named("chat.postMessage")

    def clear(self) -> None:
        """Forget the calls recorded so far."""
        self.calls.clear()

    def send_socket_envelope(self, envelope: dict[str, Any]) -> None:
        """Push one Socket Mode envelope to the connected client."""
        assert self._loop is not None and self._socket is not None, "no socket client"
        future = asyncio.run_coroutine_threadsafe(self._socket.send_json(envelope), self._loop)
        future.result(timeout=10)

    # The web application

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files/{name}", self._download)
        app.router.add_get("/socket", self._websocket)
        return app

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        call = SlackCall(method, params, dict(request.headers))
        self.calls.append(call)
        failure = self._take_failure(method)
        if self._outage:
            call.answered = 503
            return web.Response(status=503, text="Service Unavailable")
        if failure is not None:
            call.answered = failure.status
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            return web.json_response(
                {"ok": False, "error": failure.error}, status=failure.status, headers=headers
            )
        if request.headers.get("Authorization", "") != f"Bearer {BOT_TOKEN}" and not (
            method == "apps.connections.open"
        ):
            call.answered = 401
            return web.json_response({"ok": False, "error": "invalid_auth"})
        return web.json_response(self._answer(method, params))

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.method == method and failure.count > 0:
                    failure.count -= 1
                    return failure
        return None

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": lambda p: {
                "user_id": BOT_USER_ID, "bot_id": BOT_ID, "team_id": TEAM_ID,
                "user": "support-gateway", "team": "Example",
            },
            "chat.postMessage": lambda p: {
                "channel": p.get("channel"), "ts": self._next_ts(),
                "message": {"text": p.get("text", "")},
            },
            "chat.update": lambda p: {"channel": p.get("channel"), "ts": p.get("ts")},
            "chat.postEphemeral": lambda p: {"message_ts": self._next_ts()},
            "users.info": self._user,
            "conversations.members": lambda p: {
                "members": self.channel_members, "response_metadata": {"next_cursor": ""},
            },
            "usergroups.users.list": lambda p: {
                "users": self.group_members.get(str(p.get("usergroup")), []),
            },
            "files.getUploadURLExternal": self._upload_url,
            "files.completeUploadExternal": lambda p: {
                "files": [{"id": f["id"]} for f in _json_list(p.get("files"))],
            },
            "apps.connections.open": lambda p: {
                "url": self.base_url.replace("http://", "ws://") + "/socket",
            },
        }
        handler = handlers.get(method)
        body = handler(params) if handler else {}
        return {"ok": True, **body}

    def _next_ts(self) -> str:
        return f"1765000000.{next(self._ts):06d}"

    def _user(self, params: dict[str, Any]) -> dict[str, Any]:
        user_id = str(params.get("user"))
        name = self.users.get(user_id, user_id)
        return {"user": {"id": user_id, "name": name.lower(), "real_name": name,
                         "profile": {"display_name": name, "real_name": name}}}

    def _upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{next(self._ts):08d}"
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        data = await request.read()
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            part = await reader.next()
            data = await part.read() if part is not None else b""  # type: ignore[union-attr]
        self.uploads[request.match_info["file_id"]] = data
        return web.Response(text="OK")

    async def _download(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "") != f"Bearer {BOT_TOKEN}":
            return web.Response(status=403, text="token required")
        name = request.match_info["name"]
        if name not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[name], content_type="application/octet-stream")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket = socket
        await socket.send_json({"type": "hello", "num_connections": 1})
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                self.socket_acks.append(json.loads(message.data))
        return socket


class RunningSlackFake:
    """Runs a SlackFake on a free loopback port in a background thread."""

    def __init__(self, fake: SlackFake | None = None) -> None:
        self.fake = fake or SlackFake()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slack-fake",
                                        daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> SlackFake:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        self.fake._loop = self._loop
        return self.fake

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.fake.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.fake.base_url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        params.update(await request.json())
    elif request.content_type.startswith("multipart/"):
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    else:
        params.update(dict(await request.post()))
    return params


def _json_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value)
    return list(value or [])
