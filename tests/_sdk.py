"""Bandwidth's own Python SDK (``bandwidth-sdk``), for ``test_emulator_sdk.py`` only.

Importing it builds hundreds of pydantic models (~1.4 s of CPU). The tests import from here in
their bodies, so only the pytest-xdist worker that runs them pays that, not every worker at
collection.
"""

from __future__ import annotations

from bandwidth import ApiClient, Configuration
from bandwidth.api.media_api import MediaApi
from bandwidth.api.messages_api import MessagesApi
from bandwidth.exceptions import (
    ApiException,
    BadRequestException,
    NotFoundException,
    UnauthorizedException,
)
from bandwidth.models.create_message_request_error import CreateMessageRequestError
from bandwidth.models.list_message_direction_enum import ListMessageDirectionEnum
from bandwidth.models.list_message_item import ListMessageItem
from bandwidth.models.media import Media
from bandwidth.models.message import Message
from bandwidth.models.message_request import MessageRequest
from bandwidth.models.message_status_enum import MessageStatusEnum
from bandwidth.models.message_type_enum import MessageTypeEnum
from bandwidth.models.messages_list import MessagesList
from bandwidth.models.priority_enum import PriorityEnum

__all__ = [
    "ApiClient",
    "ApiException",
    "BadRequestException",
    "Configuration",
    "CreateMessageRequestError",
    "ListMessageDirectionEnum",
    "ListMessageItem",
    "Media",
    "MediaApi",
    "Message",
    "MessageRequest",
    "MessageStatusEnum",
    "MessageTypeEnum",
    "MessagesApi",
    "MessagesList",
    "NotFoundException",
    "PriorityEnum",
    "UnauthorizedException",
]
