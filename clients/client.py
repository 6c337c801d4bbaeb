"""``LoyaltyClient`` (blocking) and ``AsyncLoyaltyClient`` (asyncio): one method per RPC,
plain Python arguments in, typed results out, retries and request_ids built in."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Self

import grpc

from loyalty.clients import _calls
from loyalty.clients import models as m
from loyalty.clients.config import ClientConfig
from loyalty.clients.errors import LoyaltyError, MemberNotFound, OperationNotFound, error_from_rpc_error
from loyalty.v1 import loyalty_pb2_grpc

BATCH_ITEMS_MAX = _calls.BATCH_ITEMS_MAX


def _config(config: ClientConfig | str | None) -> ClientConfig:
    if config is None:
        return ClientConfig()
    if isinstance(config, str):
        return ClientConfig(target=config)
    return config


class _Configured:
    """What both clients do with their configuration."""

    _config: ClientConfig

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """A client configured by ``ClientConfig.from_env`` (LOYALTY_TARGET, LOYALTY_API_KEY, ...)."""
        return cls(ClientConfig.from_env(**overrides))

    @property
    def config(self) -> ClientConfig:
        """The client's configuration."""
        return self._config


def _earn(member_id, lines, currency, channel, store_id, occurred_at, request_id) -> _calls.Call:
    return _calls.mutation(m.EarnItem(member_id, tuple(lines), currency, channel, store_id, occurred_at, request_id))


def _simulate(member_id, lines, currency, channel, store_id, occurred_at) -> _calls.Call:
    return _calls.simulate_earn(m.EarnItem(member_id, tuple(lines), currency, channel, store_id, occurred_at, ""))


def _unknown_to_none(error: LoyaltyError) -> bool:
    # No stored outcome, or no such member (members are never deleted, so nothing for
    # that member was ever applied): either way the request was not applied.
    return isinstance(error, (OperationNotFound, MemberNotFound))


def _chunk_failed(call: _calls.Call, error: LoyaltyError) -> list[m.BatchItemResult]:
    """Every item of a Batch call that failed as a whole gets the call's error."""
    return [m.BatchItemResult(rid, None, error.with_request_id(rid)) for rid in call.item_request_ids]


class LoyaltyClient(_Configured):
    """A blocking client of loyalty.v1.LoyaltyService.

    >>> with LoyaltyClient("127.0.0.1:50051") as client:  # doctest: +SKIP
    ...     client.earn("alice", lines=[Line("shoes", 1, 5999)], currency="EUR")

    Every mutation gets a request_id (generated when not given) that all its retries
    reuse, so a retried call is applied at most once. Failures raise ``LoyaltyError``
    subclasses. Thread-safe: share one client per process.
    """

    def __init__(
        self, config: ClientConfig | str | None = None, *, sleep: Callable[[float], None] | None = None
    ) -> None:
        """``config`` is a ClientConfig or just a target ("host:port"); ``sleep`` waits
        between retries (tests pass a no-op)."""
        self._config = _config(config)
        self._sleep = sleep or time.sleep
        if self._config.tls is None:
            self._channel = grpc.insecure_channel(self._config.target, options=self._config.options())
        else:
            self._channel = grpc.secure_channel(
                self._config.target, self._config.tls.channel_credentials(), options=self._config.options()
            )
        self._stub = loyalty_pb2_grpc.LoyaltyServiceStub(self._channel)
        self._metadata = self._config.call_metadata()

    def close(self) -> None:
        """Close the channel; calls in flight fail."""
        self._channel.close()

    def __enter__(self) -> LoyaltyClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, call: _calls.Call, timeout: float | None) -> Any:
        """Send a call, retrying under the retry policy with the same request."""
        policy = self._config.retry
        attempt_timeout = self._config.timeout if timeout is None else timeout
        method = getattr(self._stub, call.method)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            remaining = policy.total_timeout - (time.monotonic() - started)
            this_timeout = attempt_timeout if attempt == 1 else max(0.0, min(attempt_timeout, remaining))
            try:
                response = method(call.request, timeout=this_timeout, metadata=self._metadata)
            except grpc.RpcError as rpc_error:
                remaining = policy.total_timeout - (time.monotonic() - started)
                delay = policy.next_delay(rpc_error.code(), attempt, remaining)
                if delay is None:
                    raise error_from_rpc_error(rpc_error, request_id=call.request_id, mutation=call.mutation) from rpc_error
                self._sleep(delay)
                continue
            return call.parse(response)

    # ------------------------------------------------------------------- mutations

    def enroll_member(
        self,
        member_id: str,
        *,
        attributes: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> m.Member:
        """Create a member. Raises MemberAlreadyExists if the id is taken (a retry of the
        enrolling request_id returns the member instead)."""
        item = m.EnrollMemberItem(member_id, dict(attributes or {}), request_id)
        return self._run(_calls.mutation(item), timeout)

    def earn(
        self,
        member_id: str,
        *,
        lines: Sequence[m.Line],
        currency: str,
        channel: str = "",
        store_id: str = "",
        occurred_at: datetime.datetime | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> m.EarnResult:
        """Earn points for a purchase. Pass the receipt or order id as ``request_id`` so
        it can be returned later with ``reverse(original_request_id=...)``."""
        return self._run(_earn(member_id, lines, currency, channel, store_id, occurred_at, request_id), timeout)

    def simulate_earn(
        self,
        member_id: str,
        *,
        lines: Sequence[m.Line],
        currency: str,
        channel: str = "",
        store_id: str = "",
        occurred_at: datetime.datetime | None = None,
        timeout: float | None = None,
    ) -> m.EarnResult:
        """What ``earn`` would give this purchase now, with the breakdown, without
        changing anything ("why did I get this many points?")."""
        return self._run(_simulate(member_id, lines, currency, channel, store_id, occurred_at), timeout)

    def quote_redemption(
        self,
        currency: str,
        *,
        amount_minor: int | None = None,
        points: int | None = None,
        timeout: float | None = None,
    ) -> m.RedemptionQuote:
        """Points that buy ``amount_minor`` (rounded up), or what ``points`` are worth
        (rounded down), at the program's redemption value. Raises CurrencyNotSupported."""
        return self._run(_calls.quote_redemption(currency, amount_minor, points), timeout)

    def redeem(
        self, member_id: str, points: int, *, request_id: str | None = None, timeout: float | None = None
    ) -> m.RedeemResult:
        """Spend available points, earliest-expiring first. Raises InsufficientPoints."""
        return self._run(_calls.mutation(m.RedeemItem(member_id, points, request_id)), timeout)

    def reserve(
        self,
        member_id: str,
        points: int,
        *,
        ttl: datetime.timedelta | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> m.ReserveResult:
        """Hold points at checkout until captured, released or expired (``ttl``; None:
        the server default of 15 minutes, at most 7 days)."""
        return self._run(_calls.mutation(m.ReserveItem(member_id, points, ttl, request_id)), timeout)

    def capture(
        self,
        member_id: str,
        reservation_id: str,
        *,
        points: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> m.CaptureResult:
        """Spend ``points`` of a hold (0: all of it); the rest goes back to the member."""
        return self._run(_calls.mutation(m.CaptureItem(member_id, reservation_id, points, request_id)), timeout)

    def release(
        self, member_id: str, reservation_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> m.ReleaseResult:
        """Give a hold back."""
        return self._run(_calls.mutation(m.ReleaseItem(member_id, reservation_id, request_id)), timeout)

    def reverse(
        self,
        member_id: str,
        original_request_id: str,
        *,
        lines: Sequence[m.ReturnLine] = (),
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> m.ReverseResult:
        """A return: claw back exactly what the returned lines of the Earn
        ``original_request_id`` earned (no lines: whatever is not returned yet)."""
        item = m.ReverseItem(member_id, original_request_id, tuple(lines), request_id)
        return self._run(_calls.mutation(item), timeout)

    def adjust(
        self, member_id: str, points: int, *, reason: str, request_id: str | None = None, timeout: float | None = None
    ) -> m.AdjustResult:
        """A manual credit (positive ``points``) or debit (negative), with a reason."""
        return self._run(_calls.mutation(m.AdjustItem(member_id, points, reason, request_id)), timeout)

    def batch(self, items: Sequence[m.BatchOperation], *, timeout: float | None = None) -> list[m.BatchItemResult]:
        """Apply up to BATCH_ITEMS_MAX mutations in one call; one BatchItemResult per
        item, in order (item failures are returned, not raised)."""
        return self._run(_calls.batch(items), timeout)

    def batch_operations(
        self,
        items: Sequence[m.BatchOperation],
        *,
        items_per_call: int = BATCH_ITEMS_MAX,
        timeout: float | None = None,
    ) -> list[m.MutationResult | LoyaltyError]:
        """Apply any number of mutations in Batch calls of at most ``items_per_call``
        items. Returns, in order, each item's result or its LoyaltyError (never raised;
        a Batch call that fails as a whole gives its error to each of its items)."""
        results: list[m.BatchItemResult] = []
        for chunk in _calls.chunks(items, items_per_call):
            call = _calls.batch(chunk)
            try:
                results.extend(self._run(call, timeout))
            except LoyaltyError as error:
                results.extend(_chunk_failed(call, error))
        return _calls.flatten(results)

    # ------------------------------------------------------------------- reads

    def get_member(self, member_id: str, *, timeout: float | None = None) -> m.Member:
        """A member with their balance. Raises MemberNotFound."""
        return self._run(_calls.get_member(member_id), timeout)

    def get_balance(self, member_id: str, *, timeout: float | None = None) -> m.Balance:
        """A member's balance, with the next expirations. Raises MemberNotFound."""
        return self._run(_calls.get_balance(member_id), timeout)

    def list_transactions(
        self, member_id: str, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> m.TransactionPage:
        """One page of history, newest first (page_size 0: 50; at most 500)."""
        return self._run(_calls.list_transactions(member_id, page_size, page_token), timeout)

    def iter_transactions(
        self, member_id: str, *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[m.Transaction]:
        """Every transaction of a member, newest first, fetching pages as needed."""
        page_token = ""
        while True:
            page = self.list_transactions(member_id, page_size=page_size, page_token=page_token, timeout=timeout)
            yield from page.transactions
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def get_operation(self, member_id: str, request_id: str, *, timeout: float | None = None) -> m.Operation:
        """The stored outcome of a mutation (success or failure). Raises
        OperationNotFound if it was never applied."""
        return self._run(_calls.get_operation(member_id, request_id), timeout)

    def resolve(self, member_id: str, request_id: str, *, timeout: float | None = None) -> m.Operation | None:
        """What became of a mutation whose outcome is unknown (``error.outcome_unknown``):
        its Operation if it was applied (check ``operation.succeeded``), None if not
        (then sending it again with the same request_id is safe)."""
        try:
            return self.get_operation(member_id, request_id, timeout=timeout)
        except LoyaltyError as error:
            if _unknown_to_none(error):
                return None
            raise


class AsyncLoyaltyClient(_Configured):
    """An asyncio client of loyalty.v1.LoyaltyService (grpc.aio), with the same methods
    as ``LoyaltyClient`` as coroutines (``iter_transactions`` is an async iterator).

    Create and use it inside one running event loop; close it with ``await
    client.close()`` or ``async with``.
    """

    def __init__(
        self, config: ClientConfig | str | None = None, *, sleep: Callable[[float], Awaitable[None]] | None = None
    ) -> None:
        """``config`` is a ClientConfig or just a target ("host:port"); ``sleep`` waits
        between retries (tests pass a no-op coroutine function)."""
        self._config = _config(config)
        self._sleep = sleep or asyncio.sleep
        # grpc.aio channels belong to the event loop they are created in, so the
        # channel is made on first use, inside the caller's loop.
        self._channel: grpc.aio.Channel | None = None
        self._stub: loyalty_pb2_grpc.LoyaltyServiceStub | None = None
        self._metadata = self._config.call_metadata()

    def _stub_now(self) -> loyalty_pb2_grpc.LoyaltyServiceStub:
        if self._stub is None:
            config = self._config
            if config.tls is None:
                self._channel = grpc.aio.insecure_channel(config.target, options=config.options())
            else:
                self._channel = grpc.aio.secure_channel(
                    config.target, config.tls.channel_credentials(), options=config.options()
                )
            self._stub = loyalty_pb2_grpc.LoyaltyServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        """Close the channel; calls in flight fail."""
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None

    async def __aenter__(self) -> AsyncLoyaltyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _run(self, call: _calls.Call, timeout: float | None) -> Any:
        """Send a call, retrying under the retry policy with the same request."""
        policy = self._config.retry
        attempt_timeout = self._config.timeout if timeout is None else timeout
        method = getattr(self._stub_now(), call.method)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            remaining = policy.total_timeout - (time.monotonic() - started)
            this_timeout = attempt_timeout if attempt == 1 else max(0.0, min(attempt_timeout, remaining))
            try:
                response = await method(call.request, timeout=this_timeout, metadata=self._metadata)
            except grpc.aio.AioRpcError as rpc_error:
                remaining = policy.total_timeout - (time.monotonic() - started)
                delay = policy.next_delay(rpc_error.code(), attempt, remaining)
                if delay is None:
                    raise error_from_rpc_error(rpc_error, request_id=call.request_id, mutation=call.mutation) from rpc_error
                await self._sleep(delay)
                continue
            return call.parse(response)

    # ------------------------------------------------------------------- mutations

    async def enroll_member(
        self,
        member_id: str,
        *,
        attributes: Mapping[str, str] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> m.Member:
        """Create a member (see ``LoyaltyClient.enroll_member``)."""
        item = m.EnrollMemberItem(member_id, dict(attributes or {}), request_id)
        return await self._run(_calls.mutation(item), timeout)

    async def earn(
        self,
        member_id: str,
        *,
        lines: Sequence[m.Line],
        currency: str,
        channel: str = "",
        store_id: str = "",
        occurred_at: datetime.datetime | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> m.EarnResult:
        """Earn points for a purchase (see ``LoyaltyClient.earn``)."""
        return await self._run(_earn(member_id, lines, currency, channel, store_id, occurred_at, request_id), timeout)

    async def simulate_earn(
        self,
        member_id: str,
        *,
        lines: Sequence[m.Line],
        currency: str,
        channel: str = "",
        store_id: str = "",
        occurred_at: datetime.datetime | None = None,
        timeout: float | None = None,
    ) -> m.EarnResult:
        """What ``earn`` would give now, changing nothing (see ``LoyaltyClient.simulate_earn``)."""
        return await self._run(_simulate(member_id, lines, currency, channel, store_id, occurred_at), timeout)

    async def quote_redemption(
        self,
        currency: str,
        *,
        amount_minor: int | None = None,
        points: int | None = None,
        timeout: float | None = None,
    ) -> m.RedemptionQuote:
        """Points for an amount, or the value of points (see ``LoyaltyClient.quote_redemption``)."""
        return await self._run(_calls.quote_redemption(currency, amount_minor, points), timeout)

    async def redeem(
        self, member_id: str, points: int, *, request_id: str | None = None, timeout: float | None = None
    ) -> m.RedeemResult:
        """Spend available points (see ``LoyaltyClient.redeem``)."""
        return await self._run(_calls.mutation(m.RedeemItem(member_id, points, request_id)), timeout)

    async def reserve(
        self,
        member_id: str,
        points: int,
        *,
        ttl: datetime.timedelta | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> m.ReserveResult:
        """Hold points at checkout (see ``LoyaltyClient.reserve``)."""
        return await self._run(_calls.mutation(m.ReserveItem(member_id, points, ttl, request_id)), timeout)

    async def capture(
        self,
        member_id: str,
        reservation_id: str,
        *,
        points: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> m.CaptureResult:
        """Spend all or part of a hold (see ``LoyaltyClient.capture``)."""
        return await self._run(_calls.mutation(m.CaptureItem(member_id, reservation_id, points, request_id)), timeout)

    async def release(
        self, member_id: str, reservation_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> m.ReleaseResult:
        """Give a hold back (see ``LoyaltyClient.release``)."""
        return await self._run(_calls.mutation(m.ReleaseItem(member_id, reservation_id, request_id)), timeout)

    async def reverse(
        self,
        member_id: str,
        original_request_id: str,
        *,
        lines: Sequence[m.ReturnLine] = (),
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> m.ReverseResult:
        """A return (see ``LoyaltyClient.reverse``)."""
        item = m.ReverseItem(member_id, original_request_id, tuple(lines), request_id)
        return await self._run(_calls.mutation(item), timeout)

    async def adjust(
        self, member_id: str, points: int, *, reason: str, request_id: str | None = None, timeout: float | None = None
    ) -> m.AdjustResult:
        """A manual credit or debit (see ``LoyaltyClient.adjust``)."""
        return await self._run(_calls.mutation(m.AdjustItem(member_id, points, reason, request_id)), timeout)

    async def batch(
        self, items: Sequence[m.BatchOperation], *, timeout: float | None = None
    ) -> list[m.BatchItemResult]:
        """Up to BATCH_ITEMS_MAX mutations in one call (see ``LoyaltyClient.batch``)."""
        return await self._run(_calls.batch(items), timeout)

    async def batch_operations(
        self,
        items: Sequence[m.BatchOperation],
        *,
        items_per_call: int = BATCH_ITEMS_MAX,
        timeout: float | None = None,
    ) -> list[m.MutationResult | LoyaltyError]:
        """Any number of mutations, split into Batch calls (see
        ``LoyaltyClient.batch_operations``). The calls go one after another, so the
        items are applied in order."""
        results: list[m.BatchItemResult] = []
        for chunk in _calls.chunks(items, items_per_call):
            call = _calls.batch(chunk)
            try:
                results.extend(await self._run(call, timeout))
            except LoyaltyError as error:
                results.extend(_chunk_failed(call, error))
        return _calls.flatten(results)

    # ------------------------------------------------------------------- reads

    async def get_member(self, member_id: str, *, timeout: float | None = None) -> m.Member:
        """A member with their balance (see ``LoyaltyClient.get_member``)."""
        return await self._run(_calls.get_member(member_id), timeout)

    async def get_balance(self, member_id: str, *, timeout: float | None = None) -> m.Balance:
        """A member's balance (see ``LoyaltyClient.get_balance``)."""
        return await self._run(_calls.get_balance(member_id), timeout)

    async def list_transactions(
        self, member_id: str, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> m.TransactionPage:
        """One page of history (see ``LoyaltyClient.list_transactions``)."""
        return await self._run(_calls.list_transactions(member_id, page_size, page_token), timeout)

    async def iter_transactions(
        self, member_id: str, *, page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[m.Transaction]:
        """Every transaction of a member, newest first: ``async for t in client.iter_transactions(...)``."""
        page_token = ""
        while True:
            page = await self.list_transactions(member_id, page_size=page_size, page_token=page_token, timeout=timeout)
            for transaction in page.transactions:
                yield transaction
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def get_operation(self, member_id: str, request_id: str, *, timeout: float | None = None) -> m.Operation:
        """The stored outcome of a mutation (see ``LoyaltyClient.get_operation``)."""
        return await self._run(_calls.get_operation(member_id, request_id), timeout)

    async def resolve(self, member_id: str, request_id: str, *, timeout: float | None = None) -> m.Operation | None:
        """What became of a mutation whose outcome is unknown (see ``LoyaltyClient.resolve``)."""
        try:
            return await self.get_operation(member_id, request_id, timeout=timeout)
        except LoyaltyError as error:
            if _unknown_to_none(error):
                return None
            raise
