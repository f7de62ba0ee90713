"""``bwasync campaign``: the place for the campaign runner's commands (run, status, report).

The group exists so the command tree is stable; the campaign module adds its commands here::

    from ._campaign import campaign

    @campaign.command("run")
    @connection_options            # bwasync.cli._options: --account-id ... --emulator, with env fallbacks
    def run_command(connection: ConnectionOptions, ...) -> None: ...
"""

from __future__ import annotations

import click

__all__ = ["campaign"]


@click.group("campaign", short_help="Large, resumable sending campaigns (commands to come).")
def campaign() -> None:
    """Send large campaigns from a file, resumably, with a journal of every outcome.

    No campaign commands are available in this build yet.
    """
