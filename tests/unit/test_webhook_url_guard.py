"""The webhook URL guard: https only unless allowed; every address a host resolves to must be public unless the
operator's allowlist names its network; the dispatcher's network backend connects only to checked addresses."""

from __future__ import annotations

import pytest

from cloudeasyml.domain.webhooks.url_guard import GuardedBackend, UnsafeAddressError, UrlGuard
from cloudeasyml.settings import WebhookSettings


def _resolving_to(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(_host: str, _port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("192.0.2.1", "private"),  # documentation range
        ("::ffff:127.0.0.1", "loopback"),  # an IPv4-mapped address is judged as the IPv4 one
        ("fc00::1", "private"),
    ],
)
async def test_each_non_public_address_class_is_refused_by_name_and_by_literal(address: str, why: str) -> None:
    guard = UrlGuard(WebhookSettings(), resolve=_resolving_to(address))
    with pytest.raises(UnsafeAddressError, match=f"a {why} address"):
        await guard.check("https://hooks.example.com/in")
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeAddressError, match=f"a {why} address"):
        await guard.check(f"https://{literal}/in")


async def test_a_host_is_refused_if_any_of_its_addresses_is_not_public() -> None:
    guard = UrlGuard(WebhookSettings(), resolve=_resolving_to("93.184.215.14", "10.0.0.5"))
    with pytest.raises(UnsafeAddressError, match="10.0.0.5"):
        await guard.check("https://hooks.example.com/in")


async def test_public_addresses_pass_and_the_allowlist_admits_its_networks_only() -> None:
    await UrlGuard(WebhookSettings(), resolve=_resolving_to("93.184.215.14", "2606:4700::1")).check(
        "https://a.example/"
    )
    allowing = WebhookSettings(allowed_networks=("10.0.0.0/8", "127.0.0.1/32"))
    await UrlGuard(allowing, resolve=_resolving_to("10.9.8.7")).check("https://internal.example/")
    await UrlGuard(allowing).check("https://127.0.0.1:8443/")
    with pytest.raises(UnsafeAddressError, match="loopback"):
        await UrlGuard(allowing).check("https://127.0.0.2/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://93.184.215.14/", "must use https"),
        ("ftp://93.184.215.14/", "must use https"),
        ("https:///nohost", "no host"),
        ("https://u:p@93.184.215.14/", "credentials"),
        ("https://93.184.215.14:99999/", "not a valid URL"),
    ],
)
def test_the_form_of_a_url_is_checked(url: str, message: str) -> None:
    with pytest.raises(UnsafeAddressError, match=message):
        UrlGuard(WebhookSettings()).check_form(url)


def test_http_is_accepted_only_when_the_operator_allows_it() -> None:
    assert UrlGuard(WebhookSettings(allow_http=True)).check_form("http://93.184.215.14/") == ("93.184.215.14", 80)


async def test_the_network_backend_refuses_to_connect_to_a_refused_address() -> None:
    backend = GuardedBackend(UrlGuard(WebhookSettings(), resolve=_resolving_to("127.0.0.1")))
    with pytest.raises(UnsafeAddressError, match="loopback"):
        await backend.connect_tcp("rebinding.example", 443)
