"""Requests the HTTP parser refused, answered in JSON like every other error.

aiohttp answers what its parser cannot take (a malformed request line or
header, a line over 8 KiB, a body in a content coding it has no decoder
for, such as ``br`` or ``zstd`` without their optional packages) from
:meth:`RequestHandler.handle_error`, before any middleware runs, in plain
text. A client of a JSON API should not need a second way to read errors,
so each connection's protocol here is aiohttp's with that one method
answering ``{"error": {"code", "message"}}`` instead: 415
``unsupported_encoding`` for a content coding, 400 ``malformed_request``
for the rest, with the CORS headers of a read (so that a dashboard on
another origin reads the error, not a network failure). The connection is
closed after it, as aiohttp does: the parser cannot tell where the next
request would start.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from wire.core.errors import ClientError, MalformedRequest, UnsupportedEncoding
from wire.web.cors import read_origin, set_cors_headers
from wire.web.http import ENCODINGS_MESSAGE, error_response

log = logging.getLogger("wire.web.parser_errors")

#: The parser's message quotes what it refused: cut like every error message
#: that quotes the client (docs/protocol.md, Errors).
MESSAGE_MAX = 100


class JSONErrorsProtocol(RequestHandler):
    """aiohttp's protocol for one connection, its own errors answered in JSON."""

    # One per connection, subscribers' included: a slot, not a __dict__.
    __slots__ = ("origins",)

    def __init__(self, *args: Any, origins: Collection[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: ``WIRE_ALLOWED_ORIGINS``, for the answer's CORS headers.
        self.origins = origins

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The JSON answer to a request aiohttp refused (or a failure of its own)."""
        if request.writer.output_size > 0:
            # Part of a response is out: no answer can follow it (aiohttp's rule).
            raise ConnectionError("a response was already started; cannot answer an error")
        if status >= 500:
            # aiohttp's own failures (an exception past every middleware: a bug;
            # 504 for a TimeoutError), with their status, without internals.
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            phrase = HTTPStatus(status).phrase.lower()
            response = error_response(status, {"code": "internal_error", "message": phrase})
        else:
            error = refused(exc, message)
            # Not the parser's message: it quotes the request line, whose
            # query may carry a ?token=.
            log.info("refused a malformed request from %s (%s)", request.remote, error.code)
            response = error_response(error.status, error.as_dict())
        # Headers the parser did not reach are not there: no Origin to echo.
        set_cors_headers(response, read_origin(request.headers.get("Origin"), self.origins))
        response.force_close()
        return response


def refused(exc: BaseException | None, message: str | None) -> ClientError:
    """The client error for what the parser refused."""
    if isinstance(exc, ContentEncodingError):
        # aiohttp's own message tells the reader to install a package.
        return UnsupportedEncoding(ENCODINGS_MESSAGE, field="Content-Encoding")
    text = message or (str(exc) if exc else "") or "malformed HTTP request"
    return MalformedRequest(text[:MESSAGE_MAX])
