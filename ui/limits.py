"""A bound on request bodies: uploads have Gradio's max_file_size; everything else (the JSON of
events, queue joins) gets this much smaller limit, so a client cannot make the server buffer
gigabytes. It counts the bytes as they arrive, so a chunked request without Content-Length is
bounded too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

MAX_REQUEST_BYTES = 4 * 1024 * 1024  # event payloads reference uploaded files by path: 4 MiB is plenty
UPLOAD_PATH = "/gradio_api/upload"  # bounded by Gradio's own max_file_size

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: 413 for a non-upload request whose body exceeds max_bytes."""

    def __init__(self, app: Callable, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(UPLOAD_PATH):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(send)
            return
        seen = 0
        started = refused = False

        async def counting_receive() -> dict:
            # Over the limit: answer 413 ourselves and tell the app the client went away (raising here
            # would be turned into a 400 by the framework's body parser).
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    if not started:
                        await self.refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not refused:
                raise

    async def refuse(self, send: Send) -> None:
        body = f"request body over {self.max_bytes // (1024 * 1024)} MiB".encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
