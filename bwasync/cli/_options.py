"""The options every sending command shares, and what they resolve to.

Put ``@connection_options`` on any command that sends. The command then receives a single
``connection`` argument (:class:`ConnectionOptions`) instead of ten options, and turns it into
a checked :class:`Connection` before anything runs, so a missing value is a usage error naming
both the flag and its environment variable::

    @click.command()
    @connection_options
    def ping(connection: ConnectionOptions) -> None:
        # click.UsageError on anything missing: "Missing --account-id (or set BW_ACCOUNT_ID)"
        settings = connection.resolve(need_from=False)

        async def main() -> None:
            async with settings.connect() as session:     # starts an in-process emulator for --emulator
                await session.client.create_message(...)

        run(main())

Every option falls back to an environment variable (``show_envvar`` puts it in ``--help``). A
value given on the command line beats one from the environment; with ``--emulator`` anything
not given takes the emulator's value (see :mod:`._constants`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import click
from click.core import ParameterSource

from .._client import MessagingClient
from .._constants import MIN_CONFIGURED_RATE
from .._exceptions import ConfigurationError
from .._validation import encodable
from ..emulator import Emulator
from ._constants import (
    EMULATOR_ACCOUNT_ID,
    EMULATOR_APPLICATION_ID,
    EMULATOR_NUMBER,
    EMULATOR_PASSWORD,
    EMULATOR_USERNAME,
)
from ._output import note

__all__ = [
    "Connection",
    "ConnectionOptions",
    "HostPort",
    "ParamType",
    "Session",
    "connection_options",
    "emulator_option_note",
    "no_progress_option",
    "rate_option",
    "reject_undecodable",
]

F = TypeVar("F", bound=Callable[..., Any])


class _Spec(NamedTuple):
    param: str
    flag: str
    envvar: str
    help: str
    secret: bool = False


#: The shared options, in the order ``--help`` shows them.
_SPECS: tuple[_Spec, ...] = (
    _Spec("account_id", "--account-id", "BW_ACCOUNT_ID", "Bandwidth account id (in the API path)."),
    _Spec("username", "--username", "BW_USERNAME", "API username for HTTP Basic auth."),
    _Spec("password", "--password", "BW_PASSWORD", "API password for HTTP Basic auth.", secret=True),
    _Spec("client_id", "--client-id", "BW_CLIENT_ID", "OAuth2 client id (instead of username/password)."),
    _Spec("client_secret", "--client-secret", "BW_CLIENT_SECRET", "OAuth2 client secret.", secret=True),
    _Spec("token_url", "--token-url", "BW_TOKEN_URL", "OAuth2 token endpoint.  [default: Bandwidth's]"),
    _Spec("base_url", "--base-url", "BW_MESSAGING_URL", "Messaging API base URL.  [default: Bandwidth's production]"),
    _Spec("application_id", "--application-id", "BW_APPLICATION_ID", "Messaging application id of the sender."),
    _Spec("from_", "--from", "BW_NUMBER", "Sending number (E.164) or alphanumeric sender id."),
)
_BY_PARAM = {spec.param: spec for spec in _SPECS}
_EMULATOR_HELP = (
    "Send to an in-process emulator of Bandwidth instead (nothing leaves this machine); "
    "account, credentials, application id and --from then default to the emulator's."
)


def _missing(param: str) -> str:
    spec = _BY_PARAM[param]
    return f"Missing {spec.flag} (or set {spec.envvar})"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Fields:
    """What the options as given and the checked connection both carry, account id aside."""

    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = dataclasses.field(default=None, repr=False)
    token_url: str | None = None
    base_url: str | None = None
    application_id: str | None = None
    from_: str | None = None
    emulator: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionOptions(_Fields):
    """The shared options as given (flag, environment, or nothing), not yet checked."""

    account_id: str | None = None
    #: Where each value came from (to let a flag beat the environment).
    sources: Mapping[str, ParameterSource | None] = dataclasses.field(default_factory=dict, repr=False)

    def _on_command_line(self, param: str) -> bool:
        return self.sources.get(param) is ParameterSource.COMMANDLINE

    def resolve(self, *, need_from: bool = True, need_application: bool = True) -> Connection:
        """Check the options and fill in defaults; raise :class:`click.UsageError` on anything missing.

        Every missing value is reported at once, each naming its flag and its variable.
        """
        if self.emulator:
            return self._resolve_emulated()
        problems: list[str] = []
        if not self.account_id:
            problems.append(_missing("account_id"))
        auth = self._auth(problems)
        if need_application and not self.application_id:
            problems.append(_missing("application_id"))
        if need_from and not self.from_:
            problems.append(_missing("from_"))
        if problems:
            problems.append("(or pass --emulator to try it against a local emulator of Bandwidth)")
            raise click.UsageError("\n".join(problems))
        assert self.account_id is not None
        return Connection(
            account_id=self.account_id,
            application_id=self.application_id,
            from_=self.from_,
            base_url=self.base_url,
            token_url=self.token_url,
            **auth,
        )

    def _auth(self, problems: list[str]) -> dict[str, Any]:
        basic = {"username": self.username, "password": self.password}
        oauth = {"client_id": self.client_id, "client_secret": self.client_secret}
        has_basic, has_oauth = any(basic.values()), any(oauth.values())
        if has_basic and has_oauth:
            # A pair typed on the command line beats one inherited from the environment.
            basic_typed = any(self._on_command_line(p) for p in basic if basic[p])
            oauth_typed = any(self._on_command_line(p) for p in oauth if oauth[p])
            if basic_typed == oauth_typed:
                problems.append(
                    "Give either --username/--password (BW_USERNAME/BW_PASSWORD) or "
                    "--client-id/--client-secret (BW_CLIENT_ID/BW_CLIENT_SECRET), not both"
                )
                return {}
            has_basic, has_oauth = basic_typed, oauth_typed
        if not has_basic and not has_oauth:
            problems.append(
                "Missing credentials: --username and --password (or set BW_USERNAME and BW_PASSWORD), "
                "or --client-id and --client-secret (or set BW_CLIENT_ID and BW_CLIENT_SECRET)"
            )
            return {}
        chosen = basic if has_basic else oauth
        problems.extend(_missing(param) for param, value in chosen.items() if not value)
        return dict(chosen)

    def _resolve_emulated(self) -> Connection:
        if self.base_url and self._on_command_line("base_url"):
            raise click.UsageError("--base-url and --emulator cannot be used together (the emulator has its own URL)")
        oauth = bool(self.client_id and self.client_secret)
        return Connection(
            account_id=self.account_id or EMULATOR_ACCOUNT_ID,
            application_id=self.application_id or EMULATOR_APPLICATION_ID,
            from_=self.from_ or EMULATOR_NUMBER,
            username=None if oauth else self.username or EMULATOR_USERNAME,
            password=None if oauth else self.password or EMULATOR_PASSWORD,
            client_id=self.client_id if oauth else None,
            client_secret=self.client_secret if oauth else None,
            emulator=True,
        )


class Session(NamedTuple):
    """An open connection: the client, and the in-process emulator when ``--emulator`` is used."""

    client: MessagingClient
    emulator: Emulator | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Connection(_Fields):
    """Checked connection settings: everything needed to open a :class:`MessagingClient`."""

    account_id: str

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`MessagingClient` (account id aside)."""
        kwargs: dict[str, Any] = {}
        for name in ("username", "password", "client_id", "client_secret", "base_url", "token_url"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs

    def emulator_knobs(self) -> dict[str, Any]:
        """The emulator knobs that make it accept exactly these credentials and account."""
        if self.client_id is not None:
            return {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                # Basic auth must not be open while OAuth2 is what is being tried.
                "username": self.client_id,
                "password": self.client_secret,
                "account_id": self.account_id,
            }
        return {"username": self.username, "password": self.password, "account_id": self.account_id}

    @contextlib.asynccontextmanager
    async def connect(
        self,
        *,
        emulator_knobs: Mapping[str, Any] | None = None,
        announce: Callable[[str], None] = note,
        **client_options: Any,
    ) -> AsyncIterator[Session]:
        """Open a client (and, for ``--emulator``, the emulator it talks to) for the block.

        ``client_options`` go to :class:`MessagingClient` (``concurrency``, ``rate``,
        ``retry``...); ``emulator_knobs`` to :class:`~bwasync.emulator.Emulator` and only
        matter with ``--emulator`` (latency, faults, ``callback_url``...). ``announce`` prints
        the emulator note (a command with a live progress display passes its own printer).
        """
        async with contextlib.AsyncExitStack() as stack:
            kwargs = {**self.client_kwargs(), **client_options}
            emulator: Emulator | None = None
            if self.emulator:
                emulator = await stack.enter_async_context(
                    Emulator(**{**self.emulator_knobs(), **(emulator_knobs or {})})
                )
                kwargs["base_url"] = emulator.url
                kwargs["token_url"] = emulator.token_url
                announce(emulator_option_note(emulator.url, self.account_id))
            try:
                client = MessagingClient(self.account_id, **kwargs)
            except ConfigurationError as exc:
                raise click.UsageError(str(exc)) from None
            await stack.enter_async_context(client)
            yield Session(client, emulator)


def emulator_option_note(url: str, account_id: str) -> str:
    """The dim note printed when a command runs against the in-process emulator."""
    return f"Using an in-process Bandwidth emulator at {url} (account {account_id}); nothing leaves this machine."


def connection_options(func: F) -> F:
    """Add the shared sending options to a click command; it receives them as ``connection``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        names = [*_BY_PARAM, "emulator"]
        values = {name: kwargs.pop(name) for name in names}
        sources = {name: ctx.get_parameter_source(name) for name in names}
        kwargs["connection"] = ConnectionOptions(**values, sources=sources)
        return func(*args, **kwargs)

    decorated: Any = wrapper
    options = [
        click.option(
            spec.flag,
            spec.param,
            envvar=spec.envvar,
            show_envvar=True,
            metavar="SECRET" if spec.secret else ("E164" if spec.param == "from_" else "TEXT"),
            help=spec.help,
        )
        for spec in _SPECS
    ]
    options.append(click.option("--emulator", "emulator", is_flag=True, help=_EMULATOR_HELP))
    # click.option appends to a list that --help reads in reverse: apply the last one first.
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


# --- options several commands share ------------------------------------------------------------


def _rate_floor(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value < MIN_CONFIGURED_RATE:
        raise click.BadParameter(f"{value:g} is below one segment a day ({MIN_CONFIGURED_RATE:.3g} per second)")
    return value


def rate_option(help: str, *, default: float | None = None) -> Callable[[F], F]:
    """``--rate SEG/S``: the most segments per second a command sends (the client's ``rate``)."""
    return click.option(
        "--rate",
        type=click.FloatRange(0, min_open=True),
        default=default,
        show_default=default is not None,
        metavar="SEG/S",
        callback=_rate_floor,
        help=help,
    )


#: ``--no-progress``: no live progress display (the value goes to ``progress_mode``).
no_progress_option = click.option("--no-progress", is_flag=True, help="No progress bar nor periodic progress lines.")


# --- undecodable arguments ------------------------------------------------------------------------

#: The base of this CLI's own click value types.
if TYPE_CHECKING:
    ParamType = click.ParamType[Any, Any]  # generic from click 8.2 on
else:
    ParamType = click.ParamType


class HostPort(ParamType):
    """A ``HOST:PORT`` option value, as ``(host, port)``: an empty host is every interface, ``[::1]``
    an IPv6 one, port 0 any free port. Checked when the command line is parsed (a usage error, exit 2,
    before anything runs)."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value  # already converted
        host, sep, port = str(value).rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            self.fail(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:8080, or 127.0.0.1:0 for any free port)", param, ctx)
        return host.strip("[]") or "0.0.0.0", int(port)


def bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be listened on right now (in use, not an address here), or None.

    For the ``HostPort`` options a command serves on, checked before anything is loaded or
    sent: the probe is closed at once, so a port taken between it and the real bind is still
    caught there."""
    try:
        with socket.create_server((host, port)):
            return None
    except OSError as exc:
        return exc


#: One checking subclass per click parameter type, made on first use.
_CHECKING_TYPES: dict[type[ParamType], type[ParamType]] = {}


def _checking_type(cls: type[ParamType]) -> type[ParamType]:
    checking = _CHECKING_TYPES.get(cls)
    if checking is None:

        class Checking(cls):  # type: ignore[valid-type,misc]
            def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
                if isinstance(value, str) and not encodable(value):
                    self.fail(
                        f"{value!r} is not valid text: it has bytes that are not UTF-8 "
                        "(check the terminal's or the shell's encoding)",
                        param,
                        ctx,
                    )
                converted = super().convert(value, param, ctx)
                # click's FloatRange lets NaN through (every comparison with it is false) and
                # infinity through an open upper bound; no option of this CLI means either.
                if isinstance(converted, float) and not math.isfinite(converted):
                    self.fail(f"{value!r} is not a finite number", param, ctx)
                return converted

        Checking.__name__ = Checking.__qualname__ = cls.__name__
        checking = _CHECKING_TYPES[cls] = Checking
    return checking


def reject_undecodable(command: click.Command) -> None:
    """Make every option and argument of ``command`` and its subcommands a usage error (exit 2,
    naming the option) when its value has bytes that are not UTF-8, or is a float that is NaN or
    infinite (``nan``, ``inf``, ``1e999``), instead of a traceback or a failed run later.

    Python hands such bytes over as lone surrogates (``surrogateescape``), which nothing can
    encode or print. Paths are left alone: a file name may be any bytes on POSIX.
    """
    for param in command.params:
        ptype = param.type
        if isinstance(ptype, (click.Path, click.File)) or type(ptype) in _CHECKING_TYPES.values():
            continue
        checked = copy.copy(ptype)
        checked.__class__ = _checking_type(type(ptype))
        param.type = checked
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            reject_undecodable(sub)
