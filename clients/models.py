"""Typed values the SDK takes and returns: frozen dataclasses, never protobuf messages.

Points are ``int``; money is ``int`` minor units (cents, pence, yen) with an ISO-4217
currency; every time is a timezone-aware ``datetime`` in UTC.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from loyalty.clients.errors import LoyaltyError


class MemberStatus(enum.StrEnum):
    """A member's status."""

    UNSPECIFIED = "UNSPECIFIED"
    """The server sent no status (an older or newer server)."""
    ACTIVE = "ACTIVE"
    """An enrolled member who can earn and spend."""


class TransactionKind(enum.StrEnum):
    """What a history entry records."""

    UNSPECIFIED = "UNSPECIFIED"
    """Unknown to this SDK version."""
    ENROLL = "ENROLL"
    """The member was enrolled."""
    EARN = "EARN"
    """Points earned by a purchase."""
    REDEEM = "REDEEM"
    """Points spent."""
    RESERVE = "RESERVE"
    """Points put on hold (0 change: held points still count)."""
    CAPTURE = "CAPTURE"
    """A hold spent."""
    RELEASE = "RELEASE"
    """A hold given back."""
    REVERSE = "REVERSE"
    """A return clawed points back."""
    ADJUST = "ADJUST"
    """A manual credit or debit."""
    EXPIRE = "EXPIRE"
    """Points that reached their expiry date."""
    RESERVATION_EXPIRED = "RESERVATION_EXPIRED"
    """A hold that ran out its ttl and was released by the ledger."""


# ----------------------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True)
class Line:
    """One purchase line."""

    sku: str
    """The product code (1-64 printable characters)."""
    quantity: int
    """Units bought (at least 1)."""
    amount_minor: int
    """The line total (not the unit price) in minor units of the purchase currency."""
    category: str = ""
    """Optional product category, for rules."""


@dataclasses.dataclass(frozen=True)
class ReturnLine:
    """Units of one SKU coming back in a return."""

    sku: str
    """The product code as it was on the purchase."""
    quantity: int
    """Units returned (at least 1)."""


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class PointsExpiration:
    """Points that expire together."""

    points: int
    """How many points."""
    expires_at: datetime.datetime
    """When they expire."""


@dataclasses.dataclass(frozen=True)
class Balance:
    """A member's points. Conservation identity, always:
    ``lifetime_earned + adjusted_in + debt ==
    available + pending + reserved + redeemed + expired + reversed + adjusted_out``."""

    available: int = 0
    """Spendable now."""
    pending: int = 0
    """Earned inside the return window; spendable when it closes."""
    reserved: int = 0
    """Held by open reservations."""
    debt: int = 0
    """Clawed back by returns after the points were spent; later earns repay it first."""
    lifetime_earned: int = 0
    """Every point ever earned by purchases (before returns)."""
    next_expirations: tuple[PointsExpiration, ...] = ()
    """The soonest expiring lots, earliest first."""
    redeemed: int = 0
    """Points spent (redeem and capture)."""
    expired: int = 0
    """Points that expired."""
    reversed: int = 0
    """Points clawed back by returns."""
    adjusted_in: int = 0
    """Points added by hand."""
    adjusted_out: int = 0
    """Points removed by hand."""


@dataclasses.dataclass(frozen=True)
class Member:
    """A member with their balance."""

    member_id: str
    """The member's id."""
    attributes: dict[str, str]
    """Labels given at enrolment (tier, segment, ...)."""
    status: MemberStatus | str
    """The member's status (a plain string for statuses newer than this SDK)."""
    balance: Balance
    """The member's points."""
    enrolled_at: datetime.datetime
    """When the member was enrolled."""


@dataclasses.dataclass(frozen=True)
class LinePoints:
    """Points one purchase line earned."""

    sku: str
    """The line's SKU."""
    points: int
    """Points attributed to that line."""


@dataclasses.dataclass(frozen=True)
class EarnResult:
    """What a purchase earned."""

    points: int
    """Points the purchase earned (before any debt repayment)."""
    balance: Balance
    """The balance afterwards."""
    debt_repaid: int
    """Of ``points``, how many repaid debt."""
    pending: bool
    """True when the points are pending until the return window closes."""
    available_at: datetime.datetime | None
    """When the points become spendable."""
    expires_at: datetime.datetime | None
    """When the points expire; None if they never do."""
    lines: tuple[LinePoints, ...]
    """Points per purchase line; they add up to ``points``."""
    rules_version: int = 0
    """The rule-set version the purchase was evaluated with (0: no rules, the base rate)."""
    awards: tuple[PointsAward, ...] = ()
    """Why the points are what they are: the base earn and each rule's contribution,
    per line or for the whole basket. Empty when no rules are configured (then
    ``lines`` is the whole story)."""
    limits: tuple[PointsLimit, ...] = ()
    """Caps and budgets that cut the points, with how much each cut."""


@dataclasses.dataclass(frozen=True)
class PointsAward:
    """Points one source gave: the base rate (``rule_id`` empty) or one rule."""

    rule_id: str
    """The rule; empty for the base rate."""
    sku: str
    """The line's SKU; empty for an award on the whole basket."""
    line_index: int
    """Index of the line in the purchase; -1 for the whole basket."""
    points: int
    """Points given."""
    effect: str
    """"base", "points_per_unit", "multiplier" or "bonus_points"."""


@dataclasses.dataclass(frozen=True)
class PointsLimit:
    """A cap or budget that reduced the points of an earn."""

    rule_id: str
    """The rule whose cap or budget it is."""
    limit: str
    """"transaction", "day", "week", "month", "lifetime", "budget" or "multiplier_ceiling"."""
    points_cut: int
    """Points that were not given because of it."""


@dataclasses.dataclass(frozen=True)
class RedemptionQuote:
    """Points and money at the program's redemption value for one currency."""

    currency: str
    """ISO-4217 code."""
    amount_minor: int
    """Money in minor units (cents)."""
    points: int
    """Points. Asked for an amount: the points that buy it (rounded up). Asked for
    points: ``amount_minor`` is what they are worth (rounded down)."""


@dataclasses.dataclass(frozen=True)
class RedeemResult:
    """What a redemption spent."""

    points: int
    """Points spent."""
    balance: Balance
    """The balance afterwards."""


@dataclasses.dataclass(frozen=True)
class ReserveResult:
    """A checkout hold."""

    reservation_id: str
    """The id to capture or release the hold with."""
    points: int
    """Points held."""
    expires_at: datetime.datetime | None
    """When the hold releases itself if neither captured nor released."""
    balance: Balance
    """The balance afterwards."""


@dataclasses.dataclass(frozen=True)
class CaptureResult:
    """A hold spent."""

    captured: int
    """Points spent from the hold."""
    released: int
    """Points of the hold given back to the member."""
    balance: Balance
    """The balance afterwards."""


@dataclasses.dataclass(frozen=True)
class ReleaseResult:
    """A hold given back."""

    released: int
    """Points given back."""
    balance: Balance
    """The balance afterwards."""


@dataclasses.dataclass(frozen=True)
class ReverseResult:
    """What a return clawed back."""

    points_reversed: int
    """Points the returned lines had earned."""
    debt_added: int
    """Of those, how many could not be taken back and became debt."""
    balance: Balance
    """The balance afterwards."""


@dataclasses.dataclass(frozen=True)
class AdjustResult:
    """A manual credit or debit."""

    balance: Balance
    """The balance afterwards."""


MutationResult = Union[Member, EarnResult, RedeemResult, ReserveResult, CaptureResult, ReleaseResult, ReverseResult, AdjustResult]
"""Any mutation's result (EnrollMember's is the Member)."""


@dataclasses.dataclass(frozen=True)
class Transaction:
    """One entry of a member's history."""

    request_id: str
    """The request that made the change (empty for changes the ledger made by itself)."""
    kind: TransactionKind | str
    """What happened (a plain string for kinds newer than this SDK)."""
    points: int
    """Signed change of available + pending + reserved - debt."""
    balance_after: int
    """available + pending + reserved - debt afterwards."""
    time: datetime.datetime
    """When it happened."""
    reference: str
    """Reservation id, original request id or adjustment reason, when there is one."""


@dataclasses.dataclass(frozen=True)
class TransactionPage:
    """One page of ListTransactions."""

    transactions: tuple[Transaction, ...]
    """Newest first."""
    next_page_token: str
    """Pass to the next call for the following page; empty at the end."""


@dataclasses.dataclass(frozen=True)
class Operation:
    """The stored outcome of one mutating request (from GetOperation)."""

    member_id: str
    """The member the request was for."""
    request_id: str
    """The request's id."""
    applied_at: datetime.datetime | None
    """When the server decided it."""
    result: MutationResult | None
    """The response it got, when it succeeded."""
    error: LoyaltyError | None
    """The error it got, when it failed (a failure is an outcome too: it is stored and
    replayed)."""

    @property
    def succeeded(self) -> bool:
        """True when the request was applied successfully."""
        return self.error is None


@dataclasses.dataclass(frozen=True)
class BatchItemResult:
    """One item's outcome in a Batch, in the order of the items."""

    request_id: str
    """The request_id the item was sent with (generated when not given)."""
    result: MutationResult | None
    """The item's result when it succeeded."""
    error: LoyaltyError | None
    """The item's error when it failed (not raised)."""

    @property
    def ok(self) -> bool:
        """True when the item succeeded."""
        return self.error is None

    def unwrap(self) -> MutationResult:
        """The result, or raise the item's error."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


# ----------------------------------------------------------------------------- batch items


@dataclasses.dataclass(frozen=True)
class EnrollMemberItem:
    """A Batch item: enroll a member (see ``LoyaltyClient.enroll_member``)."""

    member_id: str
    """The new member's id."""
    attributes: dict[str, str] = dataclasses.field(default_factory=dict)
    """Labels for the member."""
    request_id: str | None = None
    """Idempotency key; generated when None."""


@dataclasses.dataclass(frozen=True)
class EarnItem:
    """A Batch item: earn points for a purchase (see ``LoyaltyClient.earn``)."""

    member_id: str
    """The member."""
    lines: tuple[Line, ...] | list[Line]
    """The purchase lines."""
    currency: str
    """ISO-4217 code of the amounts."""
    channel: str = ""
    """Free text such as "pos", "web", "app"."""
    store_id: str = ""
    """The store or web shop."""
    occurred_at: datetime.datetime | None = None
    """When the purchase happened (timezone-aware); None: not given."""
    request_id: str | None = None
    """Idempotency key (typically the receipt or order id); generated when None."""


@dataclasses.dataclass(frozen=True)
class RedeemItem:
    """A Batch item: spend available points (see ``LoyaltyClient.redeem``)."""

    member_id: str
    """The member."""
    points: int
    """Points to spend."""
    request_id: str | None = None
    """Idempotency key; generated when None."""


@dataclasses.dataclass(frozen=True)
class ReserveItem:
    """A Batch item: hold points (see ``LoyaltyClient.reserve``)."""

    member_id: str
    """The member."""
    points: int
    """Points to hold."""
    ttl: datetime.timedelta | None = None
    """How long the hold lasts; None: the server default (15 minutes)."""
    request_id: str | None = None
    """Idempotency key; generated when None."""


@dataclasses.dataclass(frozen=True)
class CaptureItem:
    """A Batch item: spend a hold (see ``LoyaltyClient.capture``)."""

    member_id: str
    """The member."""
    reservation_id: str
    """The hold."""
    points: int = 0
    """Points to spend; 0: the whole hold."""
    request_id: str | None = None
    """Idempotency key; generated when None."""


@dataclasses.dataclass(frozen=True)
class ReleaseItem:
    """A Batch item: give a hold back (see ``LoyaltyClient.release``)."""

    member_id: str
    """The member."""
    reservation_id: str
    """The hold."""
    request_id: str | None = None
    """Idempotency key; generated when None."""


@dataclasses.dataclass(frozen=True)
class ReverseItem:
    """A Batch item: a return (see ``LoyaltyClient.reverse``)."""

    member_id: str
    """The member."""
    original_request_id: str
    """The request_id of the Earn being returned."""
    lines: tuple[ReturnLine, ...] | list[ReturnLine] = ()
    """Returned lines; empty: whatever of the purchase is not returned yet."""
    request_id: str | None = None
    """Idempotency key; generated when None."""


@dataclasses.dataclass(frozen=True)
class AdjustItem:
    """A Batch item: a manual credit (+) or debit (-) (see ``LoyaltyClient.adjust``)."""

    member_id: str
    """The member."""
    points: int
    """Signed points, never 0."""
    reason: str
    """Why (required, kept in the history)."""
    request_id: str | None = None
    """Idempotency key; generated when None."""


BatchOperation = Union[EnrollMemberItem, EarnItem, RedeemItem, ReserveItem, CaptureItem, ReleaseItem, ReverseItem, AdjustItem]
"""Any item ``batch`` and ``batch_operations`` accept."""
