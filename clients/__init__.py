"""Client-side helpers for loyalty.v1.LoyaltyService.

``connect`` opens a channel and stub; ``error_details`` reads the ErrorInfo reason,
domain, metadata and BadRequest field violations of a failed call, so callers can
branch on ``details.reason == "INSUFFICIENT_POINTS"`` instead of parsing messages.
"""

from loyalty.clients.status import ErrorDetails, connect, error_details

__all__ = ["ErrorDetails", "connect", "error_details"]
