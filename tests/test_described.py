"""The page's description is built once per address and query, never shared across users or addresses."""

from __future__ import annotations

import asyncio

from ui.described import KeepDescriptions


class Describer:
    """A stand-in for Gradio's app: answers with the request's host, counts the answers it built."""

    def __init__(self, status: int = 200, cookie: bool = False) -> None:
        self.built, self.status, self.cookie = 0, status, cookie

    async def __call__(self, scope, receive, send) -> None:
        self.built += 1
        host = dict(scope["headers"]).get(b"host", b"")
        body = b"described for " + host + b" " + scope.get("query_string", b"") + b" #%d" % self.built
        headers = [(b"content-length", str(len(body)).encode())] + ([(b"set-cookie", b"a=b")] if self.cookie else [])
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body[:5], "more_body": True})
        await send({"type": "http.response.body", "body": body[5:]})


def get(app, path: str = "/config", host: bytes = b"a:7860", query: bytes = b"", method: str = "GET",
        **headers: bytes) -> tuple[int, bytes]:
    scope = {"type": "http", "method": method, "path": path, "query_string": query, "root_path": "", "scheme": "http",
             "headers": [(b"host", host), *((k.encode(), v) for k, v in headers.items())]}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_a_description_is_built_once_per_address_and_query_and_replayed_whole():
    gradio = Describer()
    app = KeepDescriptions(gradio)
    first = get(app)
    assert first == (200, b"described for a:7860  #1")
    assert get(app) == first and gradio.built == 1  # replayed as it was: all its body parts
    assert get(app, "/gradio_api/info", query=b"serialize=False")[1] == b"described for a:7860 serialize=False #2"
    assert get(app, host=b"b:7860")[1] == b"described for b:7860  #3"  # another address: its own root URL
    assert get(app, "/gradio_api/queue/join")[1].endswith(b"#4")  # anything else: never kept
    assert get(app, "/gradio_api/queue/join")[1].endswith(b"#5")
    assert get(app, method="POST")[1].endswith(b"#6")
    assert gradio.built == 6
    for n in range(40):  # many one-off addresses (a Space signs each visitor's page): the busy key stays kept
        get(app, "/", query=b"__sign=%d" % n)
        assert get(app) == first
    assert gradio.built == 46 and len(app.kept) <= 16


def test_a_users_description_errors_and_cookies_set_are_never_kept():
    gradio = Describer()
    app = KeepDescriptions(gradio)
    get(app, cookie=b"access-token=x")
    get(app, cookie=b"access-token=x")
    get(app, authorization=b"Bearer x")
    assert gradio.built == 3 and not app.kept
    failing = Describer(status=500)
    app = KeepDescriptions(failing)
    assert get(app)[0] == 500 and get(app)[0] == 500 and failing.built == 2
    setting = Describer(cookie=True)
    app = KeepDescriptions(setting)
    get(app)
    get(app)
    assert setting.built == 2
