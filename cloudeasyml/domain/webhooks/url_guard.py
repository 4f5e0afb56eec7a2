"""What an endpoint URL may point at: https (http only when the operator allows it), and a host that resolves only
to public addresses (never private, loopback, link-local, multicast, reserved or cloud metadata ones) unless the
operator's allowlist names their network.

Checked when an endpoint is created or its URL changed, and again on every connection a delivery opens: DNS may
answer differently later (rebinding), so the dispatcher connects to the very address it checked
(``GuardedBackend``), never to a second lookup's answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore

from cloudeasyml.errors import InvalidInputError
from cloudeasyml.settings import WebhookSettings

__all__ = ("GuardedBackend", "UrlGuard", "UnsafeAddressError")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254", "192.0.0.192")
)
"""Cloud instance metadata services (AWS, ECS, Alibaba, AWS IPv6, Oracle): refused even if another rule missed them."""


class UnsafeAddressError(InvalidInputError):
    """The URL's scheme or the address its host resolves to is not allowed."""


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class UrlGuard:
    """Checks endpoint URLs and the addresses deliveries connect to, per ``WebhookSettings``."""

    def __init__(self, settings: WebhookSettings, *, resolve: Resolver = _resolve) -> None:
        self._allow_http = settings.allow_http
        self._allowed = tuple(ipaddress.ip_network(network, strict=False) for network in settings.allowed_networks)
        self._resolve = resolve
        self._resolve_timeout = settings.connect_timeout_seconds

    def check_form(self, url: str) -> tuple[str, int]:
        """The URL's host and port; ``UnsafeAddressError`` for a scheme that is not allowed, credentials in the URL
        or no host.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UnsafeAddressError(f"url is not a valid URL: {exc} - at `$.url`") from None
        allowed = ("https", "http") if self._allow_http else ("https",)
        if parts.scheme not in allowed:
            raise UnsafeAddressError(f"url must use {' or '.join(allowed)} - at `$.url`")
        if not parts.hostname:
            raise UnsafeAddressError("url has no host - at `$.url`")
        if parts.username is not None or parts.password is not None:
            raise UnsafeAddressError("url must not carry credentials - at `$.url`")
        return parts.hostname, port or (443 if parts.scheme == "https" else 80)

    async def check(self, url: str) -> None:
        """Refuse (``UnsafeAddressError``) a URL whose form is not allowed or whose host resolves to any address that
        is not (the create/patch check; deliveries check again as they connect).
        """
        host, port = self.check_form(url)
        await self.addresses(host, port)

    async def addresses(self, host: str, port: int) -> list[str]:
        """``host``'s addresses, every one of them allowed; ``UnsafeAddressError`` otherwise (or if it resolves to
        none).
        """
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            found = [str(literal)]
        else:
            try:
                found = await asyncio.wait_for(self._resolve(host, port), self._resolve_timeout)
            except TimeoutError:
                raise UnsafeAddressError(
                    f"url's host {host!r} did not resolve within {self._resolve_timeout:g} s - at `$.url`"
                ) from None
            except (OSError, UnicodeError) as exc:
                raise UnsafeAddressError(f"url's host {host!r} does not resolve: {exc} - at `$.url`") from None
        if not found:
            raise UnsafeAddressError(f"url's host {host!r} does not resolve - at `$.url`")
        for address in found:
            why = self.refusal(ipaddress.ip_address(address.split("%", 1)[0]))
            if why is not None:
                raise UnsafeAddressError(
                    f"url's host {host!r} resolves to {address}, a {why} address; webhooks go to public addresses "
                    "only (an operator may allow a network: CLOUDEASYML_WEBHOOKS__ALLOWED_NETWORKS) - at `$.url`"
                )
        return found

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused (``"private"``, ``"loopback"``, ...), or None when it is allowed."""
        if any(address in network for network in self._allowed):
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return self.refusal(address.ipv4_mapped)
        checks = (
            (address in METADATA_ADDRESSES, "cloud metadata"),
            (address.is_loopback, "loopback"),
            (address.is_link_local, "link-local"),
            (address.is_multicast, "multicast"),
            (address.is_unspecified, "unspecified"),
            (address.is_reserved, "reserved"),
            (address.is_private, "private"),
            (not address.is_global, "non-public"),
        )
        return next((name for refused, name in checks if refused), None)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses ``guard`` allows: it resolves the host itself, checks
    every address, and connects to the first (TLS still verifies the certificate against the host's name).
    """

    def __init__(self, guard: UrlGuard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._guard = guard
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to ``host``'s first address once all of them passed the guard."""
        addresses = await self._guard.addresses(host, port)
        return await self._inner.connect_tcp(
            addresses[0], port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Never: endpoints are network addresses."""
        raise UnsafeAddressError("unix sockets are not webhook endpoints")

    async def sleep(self, seconds: float) -> None:
        """As the inner backend sleeps."""
        await self._inner.sleep(seconds)
