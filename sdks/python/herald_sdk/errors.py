"""The errors of the client calls. Neither ever carries the API key."""

from __future__ import annotations

from typing import Optional

import grpc


class HeraldError(Exception):
    """A call to Herald failed: Herald (or the connection to it) answered with a gRPC status.

    Branch on :attr:`code` (``grpc.StatusCode.NOT_FOUND``, ``INVALID_ARGUMENT``, ...);
    :attr:`details` is Herald's message, which names the offending field for
    ``INVALID_ARGUMENT``.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "HeraldError":
        # Both the sync and the asyncio call objects have code() and details().
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")


class InvalidArgumentError(ValueError):
    """An argument was refused before anything was sent; :attr:`field` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def status_code(error: BaseException) -> Optional[grpc.StatusCode]:
    """The gRPC code of ``error`` when it is a status answer, else ``None``."""
    if isinstance(error, HeraldError):
        return error.code
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return error.code()
    return None
