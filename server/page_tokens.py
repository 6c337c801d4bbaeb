"""The one page-token codec of every List RPC (ListTransactions, ListRules,
ListApiKeys, ListAuditEvents).

A token is the position after which the next page starts (a value of a type the list
chooses: a sequence number with a member id, a rule's ordering, a key id, an audit
event id), as msgpack in URL-safe base64. It is opaque to clients and short-lived:
nothing stores it. Anything that does not decode into the list's type, or is longer
than any token this server issues, is INVALID_ARGUMENT naming ``page_token``.
"""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

import msgspec

from loyalty.server.errors import FieldViolation
from loyalty.server.limits import PAGE_TOKEN_LENGTH_MAX

Position = TypeVar("Position")

PAGE_TOKEN_FIELD = "page_token"
"""The request field every List RPC takes its token in."""

_NOT_ISSUED = "is not a token this server issued"


def encode_page_token(position: object) -> str:
    """The token that continues after ``position``."""
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(position)).decode()


def decode_page_token(token: str, position_type: type[Position]) -> Position:
    """The position a token continues after; FieldViolation on ``page_token`` when
    this server did not issue it for a list of ``position_type``."""
    if len(token) > PAGE_TOKEN_LENGTH_MAX:
        raise FieldViolation(PAGE_TOKEN_FIELD, _NOT_ISSUED)
    try:
        return msgspec.msgpack.decode(base64.urlsafe_b64decode(token.encode()), type=position_type)
    except (binascii.Error, UnicodeError, ValueError, msgspec.DecodeError):
        raise FieldViolation(PAGE_TOKEN_FIELD, _NOT_ISSUED) from None
