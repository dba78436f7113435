"""SafeFetcher against real HTTP servers on loopback: SSRF guard, redirects, retries, timeouts, size cap."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import time
from collections.abc import Callable

import pytest

from services.ingest.connectors.fetch import (
    MIB,
    FetchPolicy,
    FetchTimeout,
    ForbiddenAddress,
    HTTPStatusError,
    IPAddress,
    RateLimited,
    ResponseTooLarge,
    SafeFetcher,
    TooManyRedirects,
    UnsafeURL,
    address_refusal,
    ip_literal,
    parse_networks,
    retry_after_seconds,
)
from tests.ingest.connectors.conftest import LOOPBACK
from tests.ingest.connectors.web import Reply, WebServer


def fetcher(allow: list[str] | None = None, **limits: object) -> SafeFetcher:
    policy = {"backoff_base": 0.05, "backoff_max": 0.5, **limits}
    return SafeFetcher(FetchPolicy(allow_networks=parse_networks(LOOPBACK if allow is None else allow), **policy))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ address policy


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("::1", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("example.com", None),
        ("1.2.3.example", None),
    ],
)
def test_ip_literals_in_every_form_a_resolver_accepts(host: str, address: str | None) -> None:
    parsed = ip_literal(host)
    assert parsed == (ipaddress.ip_address(address) if address else None)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), ()) is not None


def test_public_and_allowed_addresses_pass() -> None:
    allowed = parse_networks(["127.0.0.0/8", "fd00::/8"])
    public: list[IPAddress] = [ipaddress.ip_address(a) for a in ("93.184.216.34", "2606:4700::1111", "8.8.8.8")]
    for address in public:
        assert address_refusal(address, ()) is None
    assert address_refusal(ipaddress.ip_address("127.0.0.2"), allowed) is None
    assert address_refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None  # the IPv4 inside is allowed
    assert address_refusal(ipaddress.ip_address("fd00::5"), allowed) is None
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), allowed) is not None
    with pytest.raises(ValueError, match="not-a-network"):
        parse_networks(["not-a-network"])


def test_retry_after_in_seconds_or_http_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)


# ------------------------------------------------------------------------------------------------ SSRF over HTTP


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/feed",
        "http://2130706433:{port}/feed",
        "http://0x7f.1:{port}/feed",
        "http://127.1:{port}/feed",
        "http://[::ffff:127.0.0.1]:{port}/feed",
        "http://[::ffff:7f00:1]:{port}/feed",
        "http://localhost:{port}/feed",
        "http://[::1]:{port}/feed",
        "http://0.0.0.0:{port}/feed",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/feed",
        "http://[fe80::1]/feed",
    ],
)
async def test_private_and_loopback_refused_when_not_allowed(web: WebServer, template: str) -> None:
    web.route("/feed", Reply(body=b"secret"))
    async with fetcher(allow=[]) as client:
        began = time.monotonic()
        with pytest.raises(ForbiddenAddress) as refused:
            await client.get(template.format(port=web.port))
    assert time.monotonic() - began < 2  # refused, not timed out
    assert "fetch.allow_networks" in str(refused.value)
    assert web.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "gopher://127.0.0.1:70/_x",
        "data:text/plain,hi",
        "http://u:p@127.0.0.1/",
        "//x",
        "http://0177.0.0.1/",  # octal: httpx refuses it as a URL (and ip_literal would decode it)
    ],
)
async def test_only_http_and_https(url: str) -> None:
    async with fetcher() as client:
        with pytest.raises(UnsafeURL):
            await client.get(url)


async def test_allowed_network_reaches_loopback_even_in_decimal_form(web: WebServer) -> None:
    web.route("/feed", Reply(body=b"ok"))
    async with fetcher() as client:
        response = await client.get(f"http://2130706433:{web.port}/feed")
    assert response.content == b"ok"
    assert web.hits("/feed")[0].headers["host"] == f"2130706433:{web.port}"


async def test_redirect_from_allowed_host_to_forbidden_one_is_refused(web_factory: Callable[..., WebServer]) -> None:
    allowed, forbidden = web_factory("127.0.0.1"), web_factory("127.0.0.2")
    forbidden.route("/internal", Reply(body=b"internal secret"))
    allowed.route("/feed", Reply(302, headers={"Location": forbidden.url("/internal")}))
    async with fetcher(allow=["127.0.0.1/32"]) as client:
        with pytest.raises(ForbiddenAddress, match=r"127\.0\.0\.2"):
            await client.get(allowed.url("/feed"))
        # The same host is fine when allowed: the refusal came from the address check, not from the network.
    async with fetcher(allow=["127.0.0.0/8"]) as client:
        assert (await client.get(allowed.url("/feed"))).content == b"internal secret"
    assert len(forbidden.requests) == 1


async def test_redirect_to_another_scheme_is_refused(web: WebServer) -> None:
    web.route("/feed", Reply(301, headers={"Location": "file:///etc/passwd"}))
    async with fetcher() as client:
        with pytest.raises(UnsafeURL, match="only http and https"):
            await client.get(web.url("/feed"))


async def test_redirects_are_followed_up_to_the_limit(web: WebServer) -> None:
    for n in range(7):
        web.route(f"/r{n}", Reply(307, headers={"Location": f"/r{n + 1}"}))
    web.route("/r7", Reply(body=b"arrived"))
    async with fetcher(max_redirects=7) as client:
        response = await client.get(web.url("/r0"))
    assert (response.content, response.url) == (b"arrived", web.url("/r7"))
    web.requests.clear()
    async with fetcher(max_redirects=5) as client:
        with pytest.raises(TooManyRedirects):
            await client.get(web.url("/r0"))
    assert [r.path for r in web.requests] == [f"/r{n}" for n in range(6)]


async def test_connects_to_the_checked_address_and_keeps_the_host_name(web_factory: Callable[..., WebServer]) -> None:
    server, internal = web_factory("127.0.0.1"), web_factory("127.0.0.2")
    server.route("/feed", Reply(body=b"pinned", headers={"Connection": "close"}))
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[IPAddress]:
        lookups.append(host)
        # A hostile DNS: the first answer passes the check; any later one would point inside.
        return [ipaddress.ip_address("127.0.0.1" if len(lookups) == 1 else "127.0.0.2")]

    policy = FetchPolicy(allow_networks=parse_networks(["127.0.0.1/32"]))
    async with SafeFetcher(policy, resolver=resolver) as client:
        first = await client.get(f"http://feeds.example.test:{server.port}/feed")
        assert first.content == b"pinned"
        assert server.hits("/feed")[0].headers["host"] == f"feeds.example.test:{server.port}"
        # The server closed that connection: the next one resolves and checks again, and the rebound
        # address is refused before anything is sent.
        with pytest.raises(ForbiddenAddress):
            await client.get(f"http://feeds.example.test:{internal.port}/feed")
    assert lookups == ["feeds.example.test", "feeds.example.test"]
    assert internal.requests == []


# ------------------------------------------------------------------------------------------------ retries and limits


async def test_429_waits_for_retry_after_then_succeeds(web: WebServer) -> None:
    answers = iter([Reply(429, b"slow down", {"Retry-After": "1"}), Reply(200, b"fine")])
    web.route("/api", lambda _seen: next(answers))
    async with fetcher() as client:
        began = time.monotonic()
        response = await client.get(web.url("/api"))
    assert response.content == b"fine"
    assert response.attempts == 2
    assert time.monotonic() - began >= 1.0


async def test_429_with_a_long_retry_after_goes_back_to_the_schedule(web: WebServer) -> None:
    web.route("/api", Reply(429, headers={"Retry-After": "3600"}))
    async with fetcher(max_retry_after=60) as client:
        with pytest.raises(RateLimited) as limited:
            await client.get(web.url("/api"))
    assert limited.value.retry_after == 3600
    assert len(web.requests) == 1


async def test_5xx_backs_off_exponentially_then_succeeds(web: WebServer) -> None:
    answers = iter([Reply(503), Reply(502), Reply(500), Reply(200, b"up")])
    web.route("/api", lambda _seen: next(answers))
    async with fetcher(max_attempts=4, backoff_base=0.1) as client:
        began = time.monotonic()
        response = await client.get(web.url("/api"))
    assert (response.content, response.attempts) == (b"up", 4)
    # At least half of each backoff ceiling (0.1, 0.2, 0.4) is waited.
    assert time.monotonic() - began >= 0.35


async def test_5xx_gives_up_after_max_attempts_and_4xx_at_once(web: WebServer) -> None:
    web.route("/down", Reply(500))
    web.route("/gone", Reply(404))
    async with fetcher(max_attempts=3) as client:
        with pytest.raises(HTTPStatusError) as failed:
            await client.get(web.url("/down"))
        assert failed.value.status == 500
        with pytest.raises(HTTPStatusError) as missing:
            await client.get(web.url("/gone"))
        assert missing.value.status == 404
    assert (len(web.hits("/down")), len(web.hits("/gone"))) == (3, 1)


async def test_read_timeout(web: WebServer) -> None:
    web.route("/slow", Reply(body=b"late", delay=5))
    async with fetcher(read_timeout=0.3, max_attempts=2) as client:
        began = time.monotonic()
        with pytest.raises(FetchTimeout):
            await client.get(web.url("/slow"))
    assert time.monotonic() - began < 2.5
    assert len(web.hits("/slow")) == 2


async def test_a_20_mib_body_is_refused_declared_or_streamed(web: WebServer) -> None:
    big = b"x" * (20 * MIB)
    web.route("/declared", Reply(body=big))
    web.route("/streamed", Reply(chunks=(big[i : i + 65536] for i in range(0, len(big), 65536))))
    async with fetcher() as client:  # the default cap: 5 MiB
        with pytest.raises(ResponseTooLarge, match="over the 5242880-byte limit"):
            await client.get(web.url("/declared"))
        with pytest.raises(ResponseTooLarge, match="stopped reading"):
            await client.get(web.url("/streamed"))
    number = next(i for i, r in enumerate(web.requests) if r.path == "/streamed")
    deadline = time.monotonic() + 5
    while number not in web.finished and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert web.bytes_sent[number] < 12 * MIB  # the client hung up; the server did not get to send it all


async def test_a_gzip_bomb_is_stopped_at_the_decoded_size(web: WebServer) -> None:
    bomb = gzip.compress(b"\0" * (20 * MIB))
    assert len(bomb) < 100_000
    web.route("/bomb", Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    async with fetcher() as client:
        with pytest.raises(ResponseTooLarge):
            await client.get(web.url("/bomb"))


async def test_per_host_concurrency_cap(web: WebServer) -> None:
    web.route("/slow", Reply(body=b"ok", delay=0.3))
    async with fetcher(per_host=2) as client:
        responses = await asyncio.gather(*(client.get(web.url("/slow")) for _ in range(6)))
    assert all(r.content == b"ok" for r in responses)
    assert web.max_active == 2


async def test_not_modified_is_an_answer(web: WebServer) -> None:
    web.route("/feed", lambda seen: Reply(304) if seen.headers.get("if-none-match") == '"v1"' else Reply(body=b"x"))
    async with fetcher() as client:
        assert (await client.get(web.url("/feed"), {"If-None-Match": '"v1"'})).not_modified
        assert not (await client.get(web.url("/feed"))).not_modified
