"""The public surface is exactly what ``bwasync.__all__`` lists, and nothing private leaks."""

import bwasync

EXPECTED = {
    "DEFAULT_BASE_URL",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOKEN_URL",
    "INITIAL_RETRY_DELAY",
    "MAX_RETRY_AFTER",
    "MAX_RETRY_DELAY",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AdaptiveLimiter",
    "AuthenticationError",
    "BadRequestError",
    "BwasyncError",
    "ClientClosedError",
    "ConfigurationError",
    "CreateMessageRequestErrorBody",
    "FieldError",
    "InboundCallback",
    "ListFilters",
    "ListMessageItem",
    "Media",
    "Message",
    "MessageFields",
    "MessageRequest",
    "MessagesList",
    "MessagingClient",
    "MessagingRequestErrorBody",
    "NotFoundError",
    "Outcome",
    "PageInfo",
    "PermissionDeniedError",
    "Priority",
    "RateLimitError",
    "RateLimiter",
    "RetryPolicy",
    "SegmentInfo",
    "SendCancelledError",
    "SendResult",
    "SendStream",
    "SendSummary",
    "ServerError",
    "StatusCallback",
    "StatusCallbackMessage",
    "TokenBucket",
    "UnexpectedResponseError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "__version__",
    "segments",
}


def test_all_is_pinned() -> None:
    assert set(bwasync.__all__) == EXPECTED
    assert len(bwasync.__all__) == len(set(bwasync.__all__)), "duplicates in __all__"


def test_every_exported_name_exists_and_public_names_are_exported() -> None:
    for name in bwasync.__all__:
        assert hasattr(bwasync, name), name
    public = {n for n in vars(bwasync) if not n.startswith("_") and not isinstance(getattr(bwasync, n), type(bwasync))}
    assert public <= EXPECTED, public - EXPECTED


def test_exported_classes_present_themselves_as_bwasync() -> None:
    for name in bwasync.__all__:
        obj = getattr(bwasync, name)
        if isinstance(obj, type):
            assert obj.__module__.startswith("bwasync"), (name, obj.__module__)


def test_emulator_importable() -> None:
    from bwasync.emulator import Emulator

    assert Emulator.__name__ == "Emulator"


def test_py_typed_marker_ships() -> None:
    from importlib.resources import files

    assert files("bwasync").joinpath("py.typed").is_file()


def test_the_exception_tree_is_drawn_once_and_complete() -> None:
    import bwasync._exceptions
    import bwasync.campaign

    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    drawing = bwasync._exceptions.__doc__ or ""
    every = subclasses(bwasync.BwasyncError)
    assert bwasync.campaign.ReconcileError in every
    missing = sorted(c.__name__ for c in every if f" {c.__name__} " not in drawing)
    assert not missing, missing
    for cls in every:  # the core's are defined in _exceptions.py, the campaign layer's in its own
        assert cls.__module__ in ("bwasync._exceptions", "bwasync.campaign._exceptions"), cls


COMPLIANCE = {
    "INBOUND_DEDUPE_CAPACITY",
    "INBOUND_HANDLER_TIMEOUT",
    "INBOUND_MAX_BODY",
    "MESSAGE_RECEIVED",
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "QUIET_SEARCH_HORIZON",
    "FileOptOutStore",
    "InboundHandler",
    "InboundReply",
    "InboundStats",
    "MemoryOptOutStore",
    "NumberCheck",
    "OptOutStore",
    "QuietCheck",
    "QuietHours",
    "ReplyKind",
    "ReplyOutcome",
    "ReplyProcessor",
    "check_number",
    "classify_reply",
    "make_inbound_handler",
    "zones_for_number",
}


def test_compliance_subpackage_all_is_pinned() -> None:
    import bwasync.compliance as compliance

    assert set(compliance.__all__) == COMPLIANCE
    for name in compliance.__all__:
        assert hasattr(compliance, name), name
    public = {
        n
        for n in vars(compliance)
        if not n.startswith("_") and not isinstance(getattr(compliance, n), type(compliance))
    }
    assert public <= COMPLIANCE, public - COMPLIANCE


def test_compliance_imports_without_phonenumbers() -> None:
    # phonenumbers is an optional extra: only the number functions need it, on first use.
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['phonenumbers'] = None\n"
        "import bwasync.compliance, bwasync.campaign\n"
        "assert bwasync.compliance.classify_reply('STOP').name == 'OPT_OUT'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_bwasync_leaves_aiohttp_until_the_client_is_used() -> None:
    # aiohttp is ~0.4 s of a process's start: what never sends (models, segments, errors, the
    # CLI's commands that read a journal) does not pay it; the client still imports as before.
    import subprocess
    import sys

    code = (
        "import sys, bwasync\n"
        "assert 'aiohttp' not in sys.modules, 'import bwasync imported aiohttp'\n"
        "assert bwasync.segments('hi').segments == 1 and 'aiohttp' not in sys.modules\n"
        "from bwasync import MessagingClient\n"
        "assert MessagingClient is bwasync.MessagingClient and 'aiohttp' in sys.modules\n"
        "assert MessagingClient.__module__ == 'bwasync._client'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
