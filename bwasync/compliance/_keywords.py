"""Opt-out and re-subscribe keywords in a recipient's reply: a pure classifier.

What counts, exactly: the **whole message** is one keyword, compared without regard to case,
in ASCII letters, after removing surrounding whitespace (spaces, tabs, line breaks) and any trailing ``.`` or
``!``. ``"STOP"``, ``" stop\\n"``, ``"Stop!"`` opt out; ``"stop it"``, ``"please stop"``,
``"STOP STOP"`` and ``"don't stop"`` do not (a keyword inside a sentence is not a request:
"Can't stop smiling!"). Keywords are those of the CTIA guidelines that US carriers apply:

* opt-out: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT
* re-subscribe: START, UNSTOP

::

    classify_reply("  Stop ")     # ReplyKind.OPT_OUT
    classify_reply("start")       # ReplyKind.OPT_IN
    classify_reply("stop it")     # ReplyKind.OTHER
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["OPT_IN_KEYWORDS", "OPT_OUT_KEYWORDS", "ReplyKind", "classify_reply"]

#: Replies that withdraw consent (compared in upper case, the whole message).
OPT_OUT_KEYWORDS: Final = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
#: Replies that give it back.
OPT_IN_KEYWORDS: Final = frozenset({"START", "UNSTOP"})
#: Characters a keyword may be followed by: people end a one-word message with them.
_TRAILING: Final = ".!"


class ReplyKind(enum.Enum):
    """What a reply asks for."""

    #: Stop messaging this number.
    OPT_OUT = "opt-out"
    #: Message this number again.
    OPT_IN = "opt-in"
    #: Anything else: a message for a person, not a keyword.
    OTHER = "other"


def classify_reply(text: str | None) -> ReplyKind:
    """What a reply's text asks for (see the module docstring for the exact rule)."""
    if not text:
        return ReplyKind.OTHER
    word = text.strip().rstrip(_TRAILING).strip()
    if not word.isascii():
        return ReplyKind.OTHER  # keywords are A-Z; upper() would turn "ſtop" into STOP
    word = word.upper()
    if word in OPT_OUT_KEYWORDS:
        return ReplyKind.OPT_OUT
    if word in OPT_IN_KEYWORDS:
        return ReplyKind.OPT_IN
    return ReplyKind.OTHER
