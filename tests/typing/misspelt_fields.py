"""Type-checked by tests/test_typing.py: every line marked ``# E:`` must be an error for mypy."""

from bwasync import MessageRequest, MessagingClient
from bwasync.campaign import make_callback_handler
from bwasync.compliance import OptOutStore, make_inbound_handler


async def calls(client: MessagingClient, request: MessageRequest) -> None:
    await client.create_message(to="+15552223333", from_="+15553332222", application_id="a", text="ok")
    await client.send(to=["+15552223333"], from_="+15553332222", application_id="a", media=["https://x/y.png"])
    await client.send_all([request], concurrency=10, rate=5.0, timeout=2.0)
    [m async for m in client.list_messages(source_tn="+15553332222", limit=10)]

    await client.create_message(to="+15552223333", form_="+15553332222", application_id="a")  # E: form_
    await client.send(to="+15552223333", from_="+15553332222", applicationId="a")  # E: applicationId
    await client.create_message(to="+15552223333", from_="+15553332222", application_id="a", tag=7)  # E: tag type
    await client.send_all([request], concurency=10)  # E: concurency
    [m async for m in client.list_messages(sourceTn="+15553332222")]  # E: sourceTn


def handlers(store: OptOutStore) -> None:
    make_callback_handler(print, username="u", password="p", max_body=1024, timeout=2.0)
    make_inbound_handler(store, on_reply=print, username="u", password="p", max_body=1024, timeout=2.0)

    make_callback_handler(print, user="u")  # E: user
    make_inbound_handler(store, onReply=print)  # E: onReply
    make_inbound_handler(store, max_body="1 MB")  # E: max_body type
