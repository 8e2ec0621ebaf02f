"""Serve a fake Telegram Bot API on 127.0.0.1 that records requests and injects faults on demand.

Implements getMe, sendMessage, sendPhoto (multipart), getUpdates, deleteWebhook, getWebhookInfo
and close with Bot API shaped JSON (``Message`` objects with ``message_id``, ``date``,
``chat{id,type}``, ``photo[]``). Every request is recorded as a :class:`Call`. Faults are queued
per method (optionally per chat) and used up one call each, in order::

    api.fail("sendMessage", Fault.retry_after(1))              # 429 with parameters.retry_after
    api.fail("sendMessage", Fault.status(500), times=2)         # 500 twice
    api.fail("sendPhoto", Fault.timeout(0.8))                   # answer only after 0.8 s
    api.fail("sendMessage", Fault.drop())                       # close the connection, no reply
    api.fail("sendMessage", Fault.status(403), chat_id=222)     # 403 bot was blocked by the user
    api.fail("sendMessage", Fault.status(400, "Bad Request: chat not found"), chat_id=9)

Run it in the test's event loop: ``api = FakeBotAPI(); await api.start(); ...; await
api.stop()``; point ``telegram.Bot(token, base_url=api.base_url, base_file_url=api.base_file_url)``
at it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_USER = {
    "id": 7000001,
    "is_bot": True,
    "first_name": "liqsignal test",
    "username": "liqsignal_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


@dataclass
class Call:
    """One request the fake received."""

    method: str
    token: str
    params: dict[str, str]
    photo: bytes | None = None
    at: float = field(default_factory=time.monotonic)
    answered: str = "ok"

    @property
    def chat_id(self) -> str | None:
        return self.params.get("chat_id")

    @property
    def text(self) -> str | None:
        return self.params.get("text")

    @property
    def caption(self) -> str | None:
        return self.params.get("caption")


#: The description the Bot API gives with a status, unless a fault names another.
DESCRIPTIONS = {
    400: "Bad Request: can't parse entities",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Fault:
    """What to answer instead of success."""

    kind: str  # "error" | "timeout" | "drop"
    code: int = 500
    description: str = "Internal Server Error"
    retry_after_s: int | None = None
    delay: float = 0.0
    raw_body: str | None = None

    @classmethod
    def retry_after(cls, seconds: int) -> Fault:
        return cls("error", 429, f"Too Many Requests: retry after {seconds}", retry_after_s=seconds)

    @classmethod
    def status(cls, code: int, description: str | None = None, raw_body: str | None = None):
        description = description or DESCRIPTIONS.get(code, "Error")
        return cls("error", code, description, raw_body=raw_body)

    @classmethod
    def timeout(cls, delay: float) -> Fault:
        return cls("timeout", delay=delay)

    @classmethod
    def drop(cls) -> Fault:
        return cls("drop")


class FakeBotAPI:
    """A local Bot API. ``valid_token`` (if set) is the only token accepted (else 401)."""

    def __init__(self, valid_token: str | None = None) -> None:
        self.valid_token = valid_token
        self.calls: list[Call] = []
        self._faults: list[list[Any]] = []  # [method, chat or None, fault, calls to let pass]
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1000)
        self._message_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- control -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    def fail(
        self,
        method: str,
        fault: Fault,
        times: int = 1,
        chat_id: int | str | None = None,
        after: int = 0,
    ) -> None:
        """Answer ``times`` calls of ``method`` (to ``chat_id`` if set) with ``fault``, after
        letting ``after`` matching calls succeed."""
        chat = None if chat_id is None else str(chat_id)
        for n in range(times):
            self._faults.append([method, chat, fault, after if n == 0 else 0])

    def add_update(
        self, chat_id: int, text: str, chat_type: str = "private", username: str | None = None
    ) -> int:
        """Queue an incoming message for getUpdates; returns its update_id."""
        uid = next(self._update_ids)
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = "user"
        else:
            chat["title"] = "group"
        if username:
            chat["username"] = username
        self._updates.append(
            {
                "update_id": uid,
                "message": {
                    "message_id": next(self._message_ids),
                    "date": int(time.time()),
                    "chat": chat,
                    "from": {"id": abs(chat_id), "is_bot": False, "first_name": "user"},
                    "text": text,
                    "entities": [
                        {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}
                    ]
                    if text.startswith("/")
                    else [],
                },
            }
        )
        return uid

    def calls_to(self, method: str) -> list[Call]:
        """Calls of one method that were answered with success."""
        return [c for c in self.calls if c.method == method and c.answered == "ok"]

    def attempts_of(self, method: str) -> list[Call]:
        """All calls of one method, whatever the answer."""
        return [c for c in self.calls if c.method == method]

    async def start(self) -> FakeBotAPI:
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- serving -------------------------------------------------------------------------

    def _take_fault(self, method: str, chat_id: str | None) -> Fault | None:
        for i, entry in enumerate(self._faults):
            m, chat, fault, skip = entry
            if m == method and (chat is None or chat == chat_id):
                if skip > 0:
                    entry[3] = skip - 1
                    return None
                del self._faults[i]
                return fault
        return None

    async def _read(self, request: web.Request) -> tuple[dict[str, str], bytes | None]:
        params: dict[str, str] = {}
        files: dict[str, bytes] = {}
        if request.content_type == "application/json":
            body = await request.json()
            params = {k: v if isinstance(v, str) else str(v) for k, v in body.items()}
        elif request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = value.file.read()
                else:
                    params[key] = str(value)
        params.update({k: v for k, v in request.query.items() if k not in params})
        photo = None
        if "photo" in files:
            photo = files["photo"]
        elif params.get("photo", "").startswith("attach://"):
            photo = files.get(params["photo"][len("attach://") :])
        elif files:
            photo = next(iter(files.values()))
        return params, photo

    def _chat(self, chat_id: str | None) -> dict[str, Any]:
        if chat_id and chat_id.lstrip("-").isdigit():
            cid = int(chat_id)
            return {"id": cid, "type": "private" if cid > 0 else "supergroup", "first_name": "u"}
        return {"id": -1001234567890, "type": "channel", "title": "channel", "username": "chan"}

    def _message(self, call: Call) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": self._chat(call.chat_id),
            "from": BOT_USER,
        }
        if call.method == "sendPhoto":
            size = len(call.photo or b"")
            msg["photo"] = [
                {
                    "file_id": f"photo{msg['message_id']}",
                    "file_unique_id": f"u{msg['message_id']}",
                    "width": 90,
                    "height": 60,
                    "file_size": size,
                }
            ]
            if call.caption:
                msg["caption"] = call.caption
        else:
            msg["text"] = call.text or ""
        return msg

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        token = request.match_info["token"]
        params, photo = await self._read(request)
        call = Call(method=method, token=token, params=params, photo=photo)
        self.calls.append(call)
        if self.valid_token is not None and token != self.valid_token:
            call.answered = "401"
            return _error(401, "Unauthorized")
        fault = self._take_fault(method, call.chat_id)
        if fault is not None:
            call.answered = fault.kind if fault.kind != "error" else str(fault.code)
            if fault.kind == "timeout":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "drop":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)  # never reaches the client
            else:
                if fault.raw_body is not None:
                    return web.Response(status=fault.code, text=fault.raw_body)
                return _error(fault.code, fault.description, fault.retry_after_s)
        return web.json_response({"ok": True, "result": self._result(call)})

    def _result(self, call: Call) -> Any:
        m = call.method
        if m == "getMe":
            return BOT_USER
        if m in ("sendMessage", "sendPhoto"):
            return self._message(call)
        if m == "getUpdates":
            offset = int(call.params.get("offset", "0") or 0)
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            return list(self._updates)
        if m in ("deleteWebhook", "close", "logOut", "setMyCommands"):
            return True
        if m == "getWebhookInfo":
            return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        return True


def _error(status: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)
