"""Pins the SDK's public surface: a change here is a change for every SDK user."""

from __future__ import annotations

import dataclasses
import inspect
import pathlib

import loyalty.clients
from loyalty.clients import AsyncLoyaltyClient, LoyaltyClient

PUBLIC_NAMES = {
    "BATCH_ITEMS_MAX", "NO_RETRIES",
    "AsyncLoyaltyClient", "LoyaltyClient", "ClientConfig", "TlsConfig", "RetryPolicy",
    "ErrorDetails", "connect", "error_details", "new_request_id",
    # results and values
    "Balance", "PointsExpiration", "Member", "MemberStatus", "EarnResult", "LinePoints",
    "RedeemResult", "ReserveResult", "CaptureResult", "ReleaseResult", "ReverseResult",
    "AdjustResult", "MutationResult", "Transaction", "TransactionKind", "TransactionPage",
    "Operation", "BatchItemResult", "Line", "ReturnLine", "PointsAward", "PointsLimit",
    "RedemptionQuote",
    # batch items
    "BatchOperation", "EnrollMemberItem", "EarnItem", "RedeemItem", "ReserveItem",
    "CaptureItem", "ReleaseItem", "ReverseItem", "AdjustItem",
    # errors
    "LoyaltyError", "MemberNotFound", "MemberAlreadyExists", "InsufficientPoints",
    "RequestIdConflict", "ReservationNotFound", "ReservationExpired",
    "CaptureExceedsReservation", "TooManyReservations", "OriginalNotFound",
    "ReturnExceedsPurchase", "OperationNotFound", "InvalidArgument", "Unauthenticated",
    "PermissionDenied", "TransientError", "Overloaded", "Unavailable", "DeadlineExceeded",
    "UnexpectedError", "RateLimited", "CurrencyNotSupported", "RuleNotFound",
    "RuleAlreadyExists", "EtagMismatch", "ApiKeyNotFound", "ControlStoreUnavailable",
    "CursorExpired",
}  # fmt: skip

CLIENT_METHODS = {
    "enroll_member", "get_member", "get_balance", "earn", "redeem", "reserve", "capture",
    "release", "reverse", "adjust", "list_transactions", "get_operation", "batch",
    "iter_transactions", "batch_operations", "resolve", "close", "from_env", "config",
    "simulate_earn", "quote_redemption",
}  # fmt: skip


def public_members(cls) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def own_docstring(value) -> str | None:
    """The docstring written on ``value`` itself. inspect.getdoc would fall back to a base
    class's docstring, and a dataclass without one gets its signature in its place."""
    if inspect.isclass(value):
        doc = vars(value).get("__doc__")
        if dataclasses.is_dataclass(value) and doc and doc.startswith(f"{value.__name__}("):
            return None
        return doc
    return value.__doc__


def own_method_docstring(cls, name: str) -> str | None:
    """The docstring of the method ``cls.name`` as defined, in ``cls`` or the base class it
    comes from, without inspect.getdoc's fallback to an overridden method's docstring."""
    owner = next(base for base in cls.__mro__ if name in vars(base))
    method = vars(owner)[name]
    return getattr(method, "__func__", method).__doc__  # property: its getter's docstring


def test_all_is_exactly_the_public_surface():
    assert set(loyalty.clients.__all__) == PUBLIC_NAMES
    assert len(loyalty.clients.__all__) == len(PUBLIC_NAMES)
    assert all(hasattr(loyalty.clients, name) for name in PUBLIC_NAMES)


def test_both_clients_have_the_same_methods():
    assert public_members(LoyaltyClient) == CLIENT_METHODS
    assert public_members(AsyncLoyaltyClient) == CLIENT_METHODS


def test_async_methods_are_coroutines_with_the_same_parameters():
    for name in CLIENT_METHODS - {"from_env", "config"}:
        blocking, asynchronous = getattr(LoyaltyClient, name), getattr(AsyncLoyaltyClient, name)
        if name == "iter_transactions":
            assert inspect.isasyncgenfunction(asynchronous) and inspect.isgeneratorfunction(blocking)
        else:
            assert inspect.iscoroutinefunction(asynchronous), name
        assert list(inspect.signature(blocking).parameters) == list(inspect.signature(asynchronous).parameters), name


def test_every_public_name_and_method_has_its_own_docstring():
    missing = []
    for name in sorted(PUBLIC_NAMES):
        value = getattr(loyalty.clients, name)
        if (inspect.isclass(value) or inspect.isfunction(value)) and not (own_docstring(value) or "").strip():
            missing.append(name)
    for cls in (LoyaltyClient, AsyncLoyaltyClient):
        for name in sorted(CLIENT_METHODS):
            if not (own_method_docstring(cls, name) or "").strip():
                missing.append(f"{cls.__name__}.{name}")
    assert missing == []


def test_the_package_is_marked_typed():
    assert (pathlib.Path(loyalty.clients.__file__).parent / "py.typed").is_file()


def test_the_error_tree_is_drawn_in_one_docstring():
    import loyalty.clients.errors as errors

    tree = errors.__doc__
    for name in PUBLIC_NAMES:
        value = getattr(loyalty.clients, name)
        if inspect.isclass(value) and issubclass(value, loyalty.clients.LoyaltyError):
            assert name in tree, name
            assert "retry" in (own_docstring(value) or "").lower(), name


def test_a_control_store_outage_is_an_unavailable_that_is_retried():
    """CONTROL_STORE_UNAVAILABLE (keys, rules or the audit log in Redis) is its own
    class, but still an Unavailable: existing ``except Unavailable`` keeps working and
    the client retries it with the same request_id."""
    import grpc

    from loyalty.clients.errors import error_from_details

    details = loyalty.clients.ErrorDetails(grpc.StatusCode.UNAVAILABLE, "down", reason="CONTROL_STORE_UNAVAILABLE")
    error = error_from_details(details, request_id="r-1", mutation=True)
    assert type(error) is loyalty.clients.ControlStoreUnavailable
    assert isinstance(error, loyalty.clients.Unavailable) and isinstance(error, loyalty.clients.TransientError)
    assert error.retryable and error.outcome_unknown


def test_an_expired_event_cursor_is_its_own_error_and_not_retried():
    """CURSOR_EXPIRED: the journal no longer holds the resume point; retrying the same
    cursor can never work, so it is not a TransientError."""
    import grpc

    from loyalty.clients.errors import error_from_details

    details = loyalty.clients.ErrorDetails(grpc.StatusCode.FAILED_PRECONDITION, "trimmed", reason="CURSOR_EXPIRED")
    error = error_from_details(details, request_id="", mutation=False)
    assert type(error) is loyalty.clients.CursorExpired
    assert not isinstance(error, loyalty.clients.TransientError)
    assert not error.retryable
