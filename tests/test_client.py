"""The client against the in-process emulator: a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

import bwasync._auth
from bwasync import (
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    Message,
    MessageRequest,
    MessagingClient,
    NotFoundError,
    PageInfo,
    RetryPolicy,
    ServerError,
    ValidationError,
)
from bwasync._client import next_page_params
from bwasync._pipeline import Gate
from bwasync.emulator import Emulator

ACCOUNT = "9900000"
APP = "93de2206-9669-4e07-948d-329f4b722ee2"
FROM = "+15553332222"
FAST_RETRY = RetryPolicy(initial_delay=0.001, max_delay=0.005)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(username="u", password="p", account_id=ACCOUNT, seed=1) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[MessagingClient]:
    async with MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, retry=FAST_RETRY) as c:
        yield c


# The five send examples of Bandwidth's documentation.
EXAMPLES = {
    "sms": {"to": "+15552223333", "text": "Hello world"},
    "mms": {
        "to": "+15552223333",
        "text": "A picture",
        "media": ["https://dev.bandwidth.com/images/bandwidth-logo.png"],
    },
    "mms-several": {
        "to": "+15552223333",
        "media": [
            "https://dev.bandwidth.com/images/bandwidth-logo.png",
            "https://dev.bandwidth.com/images/github_logo.png",
        ],
    },
    "group": {"to": ["+15552223333", "+15554443333"], "text": "Group hello"},
    "group-mms": {
        "to": ["+15552223333", "+15554443333"],
        "text": "Group picture",
        "media": ["https://dev.bandwidth.com/images/bandwidth-logo.png"],
    },
}


@pytest.mark.parametrize("name", list(EXAMPLES))
async def test_the_five_documented_sends(emu: Emulator, client: MessagingClient, name: str) -> None:
    fields = EXAMPLES[name]
    message = await client.create_message(from_=FROM, application_id=APP, tag=name, **fields)
    assert isinstance(message, Message)
    to = fields["to"] if isinstance(fields["to"], list) else [fields["to"]]
    assert message.to == to
    assert message.from_ == FROM and message.owner == FROM
    assert message.direction == "out"
    assert message.segment_count == 1
    assert message.tag == name
    assert message.media == fields.get("media")
    assert len(message.id) == 29 and message.id[:13].isdigit()
    assert emu.acceptance_counts(key="tag") == {name: 1}


async def test_long_sms_segment_count_from_the_server(client: MessagingClient) -> None:
    message = await client.create_message(to="+15552223333", from_=FROM, application_id=APP, text="ж" * 71)
    assert message.segment_count == 2


async def test_create_from_request_object_or_dict(emu: Emulator, client: MessagingClient) -> None:
    req = MessageRequest(to="+15552223333", from_=FROM, application_id=APP, text="x", tag="obj")
    await client.create_message(req)
    await client.create_message({"to": "+15552223333", "from": FROM, "applicationId": APP, "text": "y", "tag": "d"})
    assert emu.acceptance_counts(key="tag") == {"obj": 1, "d": 1}
    with pytest.raises(TypeError):
        await client.create_message(req, text="both")


async def test_invalid_request_never_reaches_the_server(emu: Emulator, client: MessagingClient) -> None:
    with pytest.raises(ValidationError) as info:
        await client.create_message(to=["+15552223333", "nope"], from_="+1invalid", application_id=APP, text="x")
    assert {e.field_name for e in info.value.field_errors} == {"to", "from"}
    assert emu.stats.requests == 0


async def test_wrong_credentials(emu: Emulator) -> None:
    async with MessagingClient(ACCOUNT, username="u", password="wrong", base_url=emu.url) as c:
        with pytest.raises(AuthenticationError) as info:
            await c.create_message(to="+15552223333", from_=FROM, application_id=APP, text="x")
    assert info.value.type == "unauthorized"
    assert info.value.attempts == 1
    assert emu.accepted == []


async def test_user_agent_and_content_type_on_the_wire(emu: Emulator) -> None:
    seen: list[dict[str, str]] = []

    async def trace(session: object, ctx: object, params: aiohttp.TraceRequestEndParams) -> None:
        seen.append(dict(params.headers))

    tracing = aiohttp.TraceConfig()
    tracing.on_request_end.append(trace)
    async with aiohttp.ClientSession(trace_configs=[tracing]) as session:
        client = MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, session=session)
        await client.create_message(to="+15552223333", from_=FROM, application_id=APP, text="x")
    assert seen[0]["User-Agent"].startswith("bwasync/")
    assert seen[0]["Content-Type"] == "application/json"
    assert seen[0]["Authorization"].startswith("Basic ")


async def test_borrowed_session_is_not_closed(emu: Emulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, session=session) as c:
            await c.create_message(to="+15552223333", from_=FROM, application_id=APP, text="x")
        assert not session.closed
    owned = MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url)
    async with owned:
        await owned.create_message(to="+15552223333", from_=FROM, application_id=APP, text="x")
        inner = owned._transport.session
    assert inner.closed


async def test_html_502_from_the_emulator(emu: Emulator, client: MessagingClient) -> None:
    emu.config.p_502_html = 1.0
    with pytest.raises(ServerError) as info:
        await client.create_message(
            to="+15552223333",
            from_=FROM,
            application_id=APP,
            text="x",
            retry=RetryPolicy(max_attempts=3, initial_delay=0),
        )
    assert info.value.status_code == 502
    assert info.value.description and "502" in info.value.description
    assert info.value.attempts == 3
    assert info.value.may_have_been_sent is False
    assert emu.accepted == []


async def test_5xx_answers_are_retried_and_each_message_accepted_once(emu: Emulator, client: MessagingClient) -> None:
    emu.config.p_503 = 0.5
    retry = RetryPolicy(max_attempts=30, initial_delay=0.001, max_delay=0.002)
    for i in range(20):
        await client.create_message(
            to="+15552223333", from_=FROM, application_id=APP, text="x", tag=str(i), retry=retry
        )
    assert emu.stats.faults["503"] > 0
    assert emu.stats.creates == 20 + emu.stats.faults["503"]
    assert emu.acceptance_counts(key="tag") == {str(i): 1 for i in range(20)}


async def test_timeout_after_sending_is_ambiguous_and_not_retried(emu: Emulator) -> None:
    emu.config.p_slow = 1.0
    emu.config.slow_seconds = 5.0
    async with MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, timeout=0.2) as c:
        with pytest.raises(APITimeoutError) as info:
            await c.create_message(to="+15552223333", from_=FROM, application_id=APP, text="x", tag="slow")
    assert info.value.may_have_been_sent is True
    assert info.value.attempts == 1
    assert emu.acceptance_counts(key="tag") == {"slow": 1}


async def test_refused_connection_is_not_sent() -> None:
    async with MessagingClient(
        ACCOUNT,
        username="u",
        password="p",
        base_url="http://127.0.0.1:9/api/v2",
        retry=RetryPolicy(max_attempts=2, initial_delay=0),
    ) as c:
        with pytest.raises(Exception) as info:
            await c.create_message(to="+15552223333", from_=FROM, application_id=APP, text="x")
    assert getattr(info.value, "may_have_been_sent", None) is False
    assert info.value.attempts == 2  # type: ignore[attr-defined]


# --- OAuth2 ------------------------------------------------------------------------------------


async def test_oauth2_one_refresh_for_many_concurrent_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    async with Emulator(client_id="cid", client_secret="csecret", account_id=ACCOUNT, token_ttl=3600) as emu:
        async with MessagingClient(
            ACCOUNT, client_id="cid", client_secret="csecret", token_url=emu.token_url, base_url=emu.url
        ) as c:
            sends = [
                c.create_message(to="+15552223333", from_=FROM, application_id=APP, text="x", tag=str(i))
                for i in range(50)
            ]
            await asyncio.gather(*sends)
            assert emu.stats.tokens_issued == 1
            assert c.auth.refreshes == 1  # type: ignore[attr-defined]

            # Jump the client's clock past the token's refresh point: the next burst shares one refresh.
            real = bwasync._auth.monotonic
            monkeypatch.setattr(bwasync._auth, "monotonic", lambda: real() + 4000)
            await asyncio.gather(
                *[
                    c.create_message(to="+15552223333", from_=FROM, application_id=APP, text="x", tag=f"b{i}")
                    for i in range(50)
                ]
            )
            assert emu.stats.tokens_issued == 2
            assert len(emu.accepted) == 100
            assert "csecret" not in repr(c)


async def test_oauth2_token_revoked_server_side_refreshes_once() -> None:
    async with (
        Emulator(client_id="cid", client_secret="csecret", account_id=ACCOUNT) as emu,
        MessagingClient(
            ACCOUNT, client_id="cid", client_secret="csecret", token_url=emu.token_url, base_url=emu.url
        ) as c,
    ):
        await c.create_message(to="+15552223333", from_=FROM, application_id=APP, text="x")
        emu._tokens._tokens.clear()  # the server forgets every token it issued
        await c.create_message(to="+15552223333", from_=FROM, application_id=APP, text="y")
        assert emu.stats.tokens_issued == 2
        assert len(emu.accepted) == 2


async def test_oauth2_bad_client_credentials() -> None:
    async with Emulator(client_id="cid", client_secret="csecret", account_id=ACCOUNT) as emu:
        async with MessagingClient(
            ACCOUNT, client_id="cid", client_secret="nope", token_url=emu.token_url, base_url=emu.url
        ) as c:
            with pytest.raises(AuthenticationError):
                await c.create_message(to="+15552223333", from_=FROM, application_id=APP, text="x")
        assert emu.stats.creates == 0


# --- listing and media -------------------------------------------------------------------------


async def test_list_messages_follows_every_page(emu: Emulator, client: MessagingClient) -> None:
    for i in range(25):
        await client.create_message(to=f"+1555000{i:04d}", from_=FROM, application_id=APP, text="x")
    await client.create_message(to="+15559990000", from_="+15557770000", application_id=APP, text="other sender")
    items = [item async for item in client.list_messages(source_tn=FROM, limit=10)]
    assert len(items) == 25
    assert len({i.message_id for i in items}) == 25
    assert {i.source_tn for i in items} == {FROM}
    one = [i async for i in client.list_messages(destination_tn="+15550000007")]
    assert [i.destination_tn for i in one] == ["+15550000007"]


def test_next_list_page_follows_the_token_or_else_the_link() -> None:
    params = {"sourceTn": FROM, "limit": "10"}
    assert next_page_params(params, PageInfo(next_page_token="T2", next_page="http://x/m?pageToken=T2")) == {
        **params,
        "pageToken": "T2",
    }
    # Only the link (Bandwidth's earlier docs): its query is the next request's.
    link = "https://messaging.bandwidth.com/api/v2/users/1/messages?sourceTn=%2B15553332222&limit=10&pageToken=T3"
    assert next_page_params(params, PageInfo(next_page=link)) == {"sourceTn": FROM, "limit": "10", "pageToken": "T3"}
    assert next_page_params(params, PageInfo(prev_page_token="T1")) is None  # the last page
    assert next_page_params(params, None) is None
    here = {**params, "pageToken": "T3"}
    assert next_page_params(here, PageInfo(next_page_token="T3")) is None  # a page naming itself: stop


async def test_list_messages_needs_a_filter_and_known_names(client: MessagingClient) -> None:
    with pytest.raises(ConfigurationError):
        [i async for i in client.list_messages()]
    with pytest.raises(ConfigurationError):
        [i async for i in client.list_messages(limit=5)]
    with pytest.raises(TypeError):
        [i async for i in client.list_messages(sourceTn="+1")]


async def test_media_round_trip_with_a_slash_in_the_id(client: MessagingClient) -> None:
    await client.upload_media("campaign/42/logo.png", b"\x89PNG...", content_type="image/png")
    await client.upload_media("other.txt", b"hello", content_type="text/plain")
    assert await client.get_media("campaign/42/logo.png") == b"\x89PNG..."
    names = sorted([m.media_name async for m in client.list_media()])
    assert names == ["campaign/42/logo.png", "other.txt"]
    await client.delete_media("campaign/42/logo.png")
    with pytest.raises(NotFoundError):
        await client.get_media("campaign/42/logo.png")


async def test_list_media_follows_continuation_tokens(emu: Emulator, client: MessagingClient) -> None:
    emu.config.media_page_size = 2
    for i in range(5):
        await client.upload_media(f"m{i}", b"x")
    assert sorted([m.media_name async for m in client.list_media()]) == [f"m{i}" for i in range(5)]


# --- configuration ----------------------------------------------------------------------------


def test_from_env() -> None:
    env = {"BW_ACCOUNT_ID": "1", "BW_USERNAME": "u", "BW_PASSWORD": "p", "BW_MESSAGING_URL": "http://x/api/v2"}
    c = MessagingClient.from_env(env)
    assert c.account_id == "1" and c.base_url == "http://x/api/v2"
    c = MessagingClient.from_env(
        {"BW_ACCOUNT_ID": "1", "BW_CLIENT_ID": "i", "BW_CLIENT_SECRET": "s", "BW_TOKEN_URL": "http://t/token"}
    )
    assert c.auth.refreshable
    assert c.auth.token_url == "http://t/token"  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="BW_ACCOUNT_ID"):
        MessagingClient.from_env({"BW_USERNAME": "u", "BW_PASSWORD": "p"})
    with pytest.raises(ConfigurationError, match="BW_PASSWORD"):
        MessagingClient.from_env({"BW_ACCOUNT_ID": "1", "BW_USERNAME": "u"})
    with pytest.raises(ConfigurationError, match="BW_CLIENT_SECRET"):
        MessagingClient.from_env({"BW_ACCOUNT_ID": "1", "BW_CLIENT_ID": "u"})
    with pytest.raises(ConfigurationError, match="no credentials"):
        MessagingClient.from_env({"BW_ACCOUNT_ID": "1"})


def test_constructor_checks() -> None:
    with pytest.raises(ConfigurationError):
        MessagingClient("", username="u", password="p")
    with pytest.raises(ConfigurationError):
        MessagingClient("1")
    with pytest.raises(ConfigurationError):
        MessagingClient("1", username="u", password="p", client_id="c", client_secret="s")
    with pytest.raises(ConfigurationError):
        MessagingClient("1", username="u", password="p", concurrency=0)


async def test_a_client_used_in_another_event_loop_refuses_before_anything_leaves(
    emu: Emulator, client: MessagingClient
) -> None:
    # The session's connections belong to the loop the client was used in first: in another loop
    # (a second asyncio.run, a thread) aiohttp fails before sending, which must not be reported
    # as a send whose fate is unknown.
    msg = {"to": "+15552223333", "from_": "+15553332222", "text": "hi", "application_id": "app"}
    await client.send(**msg)

    def elsewhere() -> list[str]:
        async def calls() -> list[str]:
            refused = []
            for call in (client.send(**msg), client.create_message(**msg)):
                try:
                    await call
                except ConfigurationError as exc:
                    refused.append(str(exc))
            try:
                client.send_many([msg])
            except ConfigurationError as exc:
                refused.append(str(exc))
            return refused

        return asyncio.run(calls())

    refused = await asyncio.to_thread(elsewhere)
    assert len(refused) == 3 and all("another event loop" in r for r in refused)
    assert emu.stats.creates == 1
    assert (await client.send(**msg)).ok  # still fine in its own loop


async def test_with_options_shares_the_session(emu: Emulator, client: MessagingClient) -> None:
    strict = client.with_options(retry=RetryPolicy(max_attempts=1))
    assert strict.retry.max_attempts == 1 and client.retry.max_attempts != 1
    assert strict._transport is client._transport
    await strict.create_message(to="+15552223333", from_=FROM, application_id=APP, text="x")
    assert len(emu.accepted) == 1


async def test_send_returns_the_outcome_instead_of_raising(emu: Emulator, client: MessagingClient) -> None:
    from bwasync import Outcome

    ok = await client.send(to="+15552223333", from_=FROM, application_id=APP, text="x", tag="ok")
    assert ok.outcome is Outcome.ACCEPTED and ok.message is not None and ok.attempts == 1 and ok.latency > 0
    bad = await client.send(to="nope", from_=FROM, application_id=APP, text="x")
    assert bad.outcome is Outcome.NOT_SENT and isinstance(bad.error, ValidationError) and bad.attempts == 0
    emu.config.p_503 = 1.0
    failed = await client.send({"to": "+15552223333", "from": FROM, "applicationId": APP, "text": "y"})
    assert failed.outcome is Outcome.NOT_SENT and isinstance(failed.error, ServerError)
    assert failed.attempts == client.retry.max_attempts
    emu.config.p_503, emu.config.p_drop_after = 0.0, 1.0
    lost = await client.send(to="+15552223333", from_=FROM, application_id=APP, text="z", tag="lost")
    assert lost.outcome is Outcome.AMBIGUOUS and lost.attempts == 1
    assert emu.acceptance_counts(key="tag") == {"ok": 1, "lost": 1}


@pytest.mark.parametrize(
    "options",
    [
        {"base_url": "not a url"},
        {"base_url": ""},
        {"base_url": "ftp://bw.example/api/v2"},
        {"connection_limit": -1},
        {"client_id": "c", "client_secret": "s", "token_url": "/oauth2/token", "username": None, "password": None},
        {"connect_timeout": 0},
        {"connect_timeout": -1.0},
        {"connect_timeout": float("nan")},
    ],
    ids=[
        "base-url-not-a-url",
        "base-url-empty",
        "base-url-ftp",
        "connection-limit-negative",
        "token-url-relative",
        "connect-timeout-zero",
        "connect-timeout-negative",
        "connect-timeout-nan",
    ],
)
def test_a_setting_that_could_only_fail_a_send_is_refused_when_the_client_is_built(options: dict[str, object]) -> None:
    # aiohttp would refuse these only once a request is under way (a bad URL) or wait for ever (a
    # negative connection limit): a send reported ambiguous, or hung, instead of a clear error.
    settings: dict[str, object] = {"username": "u", "password": "p", **options}
    with pytest.raises(ConfigurationError):
        MessagingClient(ACCOUNT, **settings)  # type: ignore[arg-type]


async def test_a_huge_concurrency_opens_its_places_in_one_step(emu: Emulator) -> None:
    gives = 0
    give = Gate._give

    def counting(gate: Gate) -> None:
        nonlocal gives
        gives += 1
        give(gate)

    # The first round's end opened the other places one call each (10**12 of them stalled the
    # loop for good): now it opens them in one step, whatever their number.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Gate, "_give", counting)
        async with MessagingClient(ACCOUNT, username="u", password="p", base_url=emu.url, concurrency=10_000) as c:
            result = await c.send(to="+15552223333", from_="+15553332222", text="hi", application_id=APP)
    assert result.ok
    assert gives < 10
