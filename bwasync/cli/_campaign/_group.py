"""The ``bwasync campaign`` command group (its commands register in :mod:`._commands`)."""

from __future__ import annotations

import click


class _Group(click.Group):
    """Lists commands in the order they were added (run, status, report)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    "campaign",
    cls=_Group,
    short_help="Send a file of personalised messages, resumably, with a journal of every outcome.",
)
def campaign() -> None:
    """Send large campaigns from a CSV or JSONL file, resumably, with a journal of every outcome.

    Each row is one message (a 'to' column, optional 'from' and 'media', any other column a
    template variable). Every row's fate is kept in a SQLite journal, written before each send
    and after each answer, so a run can be killed at any moment and rerun: no row is lost, none
    is sent twice.
    """
