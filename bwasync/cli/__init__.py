"""The ``bwasync`` command line (click for commands, rich for output).

Install with the ``cli`` extra (``pip install 'bwasync[cli]'``), then run ``bwasync --help`` or
``python -m bwasync.cli --help``. Modules: ``_app`` (root group), ``_options`` (the shared
sending options, reusable by any command), ``_send``, ``_segments_cmd``, ``_emulator_cmd``,
``_demo`` (with ``_receiver``, its callback receiver), ``_campaign`` (the campaign commands'
group), ``_output`` (rendering), ``_loop`` (uvloop), ``_constants`` (defaults).
"""

from ._app import cli, main

__all__ = ["cli", "main"]
