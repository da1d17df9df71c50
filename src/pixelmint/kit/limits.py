"""Request body caps, enforced before anything reads the body (pure ASGI middleware).

Without them a JSON body is read whole, then parsed, before authentication even runs (a 50 MB body
cost 1.2 GB), and a multipart upload is buffered several times.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelmint.kit.errors import PixelmintError


class PayloadTooLarge(PixelmintError):
    status_code = 413
    code = "payload_too_large"


class BodyLimit:
    """Answers 413 ``payload_too_large`` (the usual ``{error, message}`` body) to a request whose
    body is larger than its cap: at once when the declared ``Content-Length`` is larger, else as
    soon as the received (chunked) body passes the cap. Then the app reads a disconnect and what it
    answers is dropped.

    ``max_bytes`` caps every body except multipart uploads to the paths in ``uploads`` (path → cap).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, uploads: Mapping[str, int]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads

    def _cap(self, scope: Scope, content_type: str) -> int:
        if content_type.startswith("multipart/form-data") and scope["path"] in self.uploads:
            return self.uploads[scope["path"]]
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k: v for k, v in scope["headers"] if k in (b"content-length", b"content-type")}
        cap = self._cap(scope, headers.get(b"content-type", b"").decode("latin-1").lower())
        refusal = PayloadTooLarge(f"The request body is larger than {cap} bytes.")
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > cap:
            await JSONResponse(refusal.body(), status_code=refusal.status_code)(scope, receive, send)
            return

        received, started, refused = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    refused = True
                    if not started:
                        await JSONResponse(refusal.body(), status_code=refusal.status_code)(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception:
            if not refused:
                raise
