"""The page's description, built once per address instead of once per visitor.

Gradio answers `/config` (a ~500 KB description of the page's ~450 blocks, deep-copied and re-encoded for each
request), `/gradio_api/info` (the API description) and `/` (the page, with both inside) anew for every visitor:
~30, 9 and 38 ms of the server's time each, when thirty visitors of a class open the app within seconds and the
one core training leaves is the bottleneck (docs/ROBUSTNESS.md). What they return depends only on the request's
address (Gradio writes the root URL into it, from the Host and forwarded headers), its query and its user; the
blocks do not change once the app is built. So an answer is kept per (path, query, address headers) and sent
again as it was; a request with a cookie or credentials (a user's own description) always goes to Gradio.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ui.limits import Receive, Scope, Send

DESCRIBED = ("/", "/config", "/gradio_api/info")
# what Gradio builds the root URL from (route_utils.get_root_url, uvicorn's proxy headers)
ADDRESS_HEADERS = (b"host", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port", b"forwarded",
                   b"x-forwarded-prefix", b"accept-language")
PRIVATE_HEADERS = (b"cookie", b"authorization")
MAX_KEPT = 16  # answers kept, the least recently sent dropped first (each up to ~0.6 MB)


class KeepDescriptions:
    """ASGI middleware: the first 200 answer to a GET of a DESCRIBED path is kept per key and replayed. (On a Space
    each visitor's page address carries its own signed query: those pass through the kept answers without
    pushing out /config, which every gradio_client visitor asks for with the same key.)"""

    def __init__(self, app: Any, paths: tuple[str, ...] = DESCRIBED) -> None:
        self.app, self.paths = app, paths
        self.kept: OrderedDict[tuple, tuple[dict, bytes]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        described = scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") in self.paths
        headers = dict(scope.get("headers") or []) if described else {}  # not built for every picture's GET
        if not described or any(h in headers for h in PRIVATE_HEADERS):
            await self.app(scope, receive, send)
            return
        key = (scope["path"], scope.get("query_string", b""), scope.get("root_path", ""), scope.get("scheme"),
               *(headers.get(h) for h in ADDRESS_HEADERS))
        if key in self.kept:
            self.kept.move_to_end(key)
            start, body = self.kept[key]
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        start: dict = {}
        parts: list[bytes] = []

        async def keep(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, keep)
        cookies = any(name.lower() == b"set-cookie" for name, _ in start.get("headers", []))
        if start.get("status") == 200 and not cookies:
            self.kept[key] = (start, b"".join(parts))
            while len(self.kept) > MAX_KEPT:
                self.kept.popitem(last=False)
