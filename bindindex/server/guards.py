"""ASGI middleware that checks the access token and limits the size of request bodies."""

from __future__ import annotations

import hmac
import json
import logging
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

TOKEN_COOKIE = "bindindex_token"
# Paths that probes reach without a token.
OPEN_PATHS = frozenset({"/health"})


async def send_error(send: Send, status: int, code: str, message: str, **headers: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.encode(), value.encode()) for name, value in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class TokenGuard:
    """Reject requests without the configured token with 401, except those to ``OPEN_PATHS``.

    The token is accepted as ``Authorization: Bearer TOKEN``, as a ``token``
    query parameter or as the cookie that a request with a valid query
    parameter sets. The cookie lets the web page's ``<img>`` and ``<audio>``
    elements, which cannot send headers, load media after the page was opened
    with ``?token=TOKEN``.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()
        self.rejected = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        from_query = self._query_token(scope)
        presented = self._header_token(scope) or from_query or self._cookie_token(scope)
        if presented is None or not hmac.compare_digest(presented.encode(), self.token):
            self.rejected += 1
            # The first rejections are logged one by one, later ones every 100th,
            # so a client that retries in a loop cannot flood the log.
            if self.rejected <= 10 or self.rejected % 100 == 0:
                client = scope.get("client") or ("unknown", 0)
                log.warning(
                    "rejected %s %s from %s: %s token (%d rejected so far)",
                    scope["method"],
                    scope["path"],
                    client[0],
                    "missing" if presented is None else "wrong",
                    self.rejected,
                )
            await send_error(
                send,
                401,
                "unauthorized",
                "missing or invalid token: send the header 'Authorization: Bearer TOKEN', "
                "or open the page with ?token=TOKEN",
                **{"www-authenticate": "Bearer"},
            )
            return
        if from_query is None:
            await self.app(scope, receive, send)
            return
        cookie = f"{TOKEN_COOKIE}={quote(from_query)}; Path=/; HttpOnly; SameSite=Strict"

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message["headers"], (b"set-cookie", cookie.encode())],
                }
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    @staticmethod
    def _header_token(scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials:
                    return credentials.strip()
        return None

    @staticmethod
    def _query_token(scope: Scope) -> str | None:
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return values[0] if values else None

    @staticmethod
    def _cookie_token(scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookies: SimpleCookie = SimpleCookie()
                cookies.load(value.decode("latin-1"))
                if TOKEN_COOKIE in cookies:
                    return unquote(cookies[TOKEN_COOKIE].value)
        return None


class BodyLimit:
    """Reject a request whose body is larger than ``max_bytes`` with 413.

    A declared Content-Length over the limit is rejected before any byte is
    read. A body without one (chunked) is counted as it arrives, and the app
    receives a disconnect once the count passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self, size: str) -> str:
        megabytes = self.max_bytes / (1024 * 1024)
        return (
            f"request body of {size} exceeds the limit of {self.max_bytes} bytes "
            f"({megabytes:g} MiB); send a smaller file or start the service with a larger "
            "--max-upload-mb"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await send_error(send, 413, "payload_too_large", self._message(f"{declared} bytes"))
            return

        received = 0
        rejected = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    rejected = True
                    if not response_started:
                        await send_error(
                            send, 413, "payload_too_large", self._message("more bytes")
                        )
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if rejected:
                # The 413 was sent already, so the app's response to the cut body is dropped.
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except ClientDisconnect:
            if not rejected:
                raise


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope["headers"]
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
