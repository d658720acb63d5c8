"""The one exception tree of the server, and the table of error codes.

Every rejection the server gives carries an :class:`ErrorCode`. The README lists the codes with
their meaning; HTTP statuses and WebSocket close codes are derived from this module only.

    ServerError                  root; ``.code`` is an ErrorCode, ``str(exc)`` the message
    ├── InvalidInput             code ``invalid``: malformed frame, patch or parameter
    ├── Forbidden                code ``forbidden``: reserved key, or a role that may not write
    ├── Conflict                 code ``conflict``: does not apply to the current document
    ├── TooLarge                 code ``too_large``: over a configured limit
    ├── RateLimited              code ``rate_limited``: over the connection's rate; retry later
    ├── Unauthorized             code ``unauthorized``: no token, or an unknown one
    └── StoreUnavailable         code ``unavailable``: the store failed; nothing was acknowledged
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    INVALID = "invalid"
    CONFLICT = "conflict"
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    NOT_FOUND = "not_found"
    GONE = "gone"
    PRECONDITION_FAILED = "precondition_failed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.GONE: 410,
    ErrorCode.PRECONDITION_FAILED: 412,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (RFC 6455 section 7.4)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    INVALID_PAYLOAD = 1007  # a text frame that is not UTF-8 (closed by the WebSocket layer)
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


class ServerError(Exception):
    """Root of every error the server reports to a client."""

    code: ErrorCode = ErrorCode.INVALID

    def __init__(self, message: str, code: ErrorCode | None = None,
                 **details: object) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details = details  # extra members of the error object, e.g. retry_after

    @property
    def message(self) -> str:
        return str(self)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code.value, "message": self.message, **self.details}


class InvalidInput(ServerError):
    code = ErrorCode.INVALID


class Forbidden(ServerError):
    code = ErrorCode.FORBIDDEN


class Conflict(ServerError):
    code = ErrorCode.CONFLICT


class TooLarge(ServerError):
    code = ErrorCode.TOO_LARGE


class RateLimited(ServerError):
    code = ErrorCode.RATE_LIMITED


class Unauthorized(ServerError):
    code = ErrorCode.UNAUTHORIZED


class StoreUnavailable(ServerError):
    code = ErrorCode.UNAVAILABLE
