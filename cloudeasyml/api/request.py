"""The app's request class: Litestar's, with JSON nested past the interpreter's recursion limit refused as a 400.

msgspec decodes nested values recursively and raises ``RecursionError`` (not a ``DecodeError``) once a document
nests deeper than the stack allows, about 1000 levels, so Litestar would answer such a body with a 500. No
endpoint takes JSON that deep; here it is malformed input, like any other body that cannot be decoded.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException

from cloudeasyml.domain.inference import TOO_DEEP

__all__ = ("PlatformRequest",)


class PlatformRequest(Request[Any, Any, Any]):
    """``Request`` whose ``json()`` and ``msgpack()`` answer a too deeply nested body with a 400."""

    async def json(self) -> Any:
        """The decoded JSON body (a ``ClientException``, 400, when it nests too deeply)."""
        try:
            return await super().json()
        except RecursionError:
            raise ClientException(TOO_DEEP) from None

    async def msgpack(self) -> Any:
        """The decoded MessagePack body (a ``ClientException``, 400, when it nests too deeply)."""
        try:
            return await super().msgpack()
        except RecursionError:
            raise ClientException("malformed MessagePack: nested too deeply") from None
