"""The limits of ``gramx serve``'s requests: the size of an upload, the number of hits."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from gramx.errors import GramxError

__all__ = ["MAX_UPLOAD", "MAX_K", "UploadTooLarge", "UploadLimit"]

#: The largest request body accepted by default (an uploaded recording, photo or clip), in bytes.
MAX_UPLOAD = 64 << 20
#: The most hits one search returns.
MAX_K = 1000


class UploadTooLarge(GramxError):
    """A request body over the limit (HTTP 413)."""

    def __init__(self, limit: int):
        super().__init__(f"the upload is larger than the server's limit of {limit >> 20} MiB",
                         hint="send a smaller file, or start gramx serve with a larger --max-upload")


class UploadLimit:
    """ASGI middleware: a body declared larger than ``limit`` is refused before it is read (413);
    one that grows past it while read (no or a false Content-Length) raises :class:`UploadTooLarge`."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            error = UploadTooLarge(self.limit) if declared.isdigit() else GramxError("Content-Length is not a number")
            status = 413 if declared.isdigit() else 400
            return await JSONResponse({"error": str(error), "hint": error.hint}, status_code=status)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise UploadTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)
