from __future__ import annotations

from decimal import Decimal

from pixelmint.kit.errors import Conflict, Forbidden, InvalidRequest, NotFound, PixelmintError, Unauthorized


class InsufficientCredits(PixelmintError):
    """402: the team's available credits do not cover the operation; nothing was reserved."""

    status_code = 402
    code = "insufficient_credits"

    def __init__(self, *, required: Decimal, available: Decimal, operation: str) -> None:
        super().__init__(
            f"{operation} needs {required} credits; the team has {available} available.",
            requiredCredits=float(required),
            availableCredits=float(available),
            operation=operation,
        )


class AlreadyVoided(Conflict):
    """409: the grant was already voided."""

    code = "already_voided"


class AppExists(Conflict):
    """409: an app with that name is already registered."""

    code = "app_exists"


class AppNotAuthorized(Forbidden):
    """403: the team (or an admin) has not granted the app use of the team's credits."""

    code = "app_not_authorized"


class AppNotFound(NotFound):
    """404: no (unrevoked) app has that id."""

    code = "app_not_found"


class BucketWouldGoNegative(Conflict):
    """409: an adjustment would take a credit bucket below zero."""

    code = "bucket_would_go_negative"


class GrantExpired(Conflict):
    """409: the grant went into an allocation period that has ended; its credits already expired."""

    code = "grant_expired"


class HoldAlreadySettled(Conflict):
    """409: the hold was already captured or released."""

    code = "hold_already_settled"


class HoldExpired(Conflict):
    """409: the hold expired before it was captured; the sweeper releases it."""

    code = "hold_expired"


class HoldNotFound(NotFound):
    """404: no hold has that id."""

    code = "hold_not_found"


class InvalidAmount(InvalidRequest):
    """422: an amount is out of its range (not > 0, 0 for an adjustment, above the held amount; a purchase or
    grant not > 0)."""

    code = "invalid_amount"


class InvalidBucket(InvalidRequest):
    """422: the bucket is not one of the credit buckets."""

    code = "invalid_bucket"


class InvalidCost(InvalidRequest):
    """422: an app operation's configured cost is negative."""

    code = "invalid_cost"


class InvalidDateRange(InvalidRequest):
    """422: a ledger filter's 'from' is not before its 'to'."""

    code = "invalid_date_range"


class InvalidPricing(InvalidRequest):
    """422: an admin's pricing table does not parse or has a bad value."""

    code = "invalid_pricing"


class InvalidServiceKey(Unauthorized):
    """401: the request has no service key, or it is unknown or revoked."""

    code = "invalid_service_key"


class InvalidTtl(InvalidRequest):
    """422: a hold's ttlSeconds is outside 1..the configured maximum."""

    code = "invalid_ttl"


class NotVoidable(Conflict):
    """409: the ledger entry is not a grant; only grants can be voided."""

    code = "not_voidable"


class ReasonRequired(InvalidRequest):
    """422: an admin adjustment or void gives no reason (the ledger row stores it)."""

    code = "reason_required"


class ResolutionNotPriced(InvalidRequest):
    """422: the resolution is above the largest one the pricing table prices."""

    code = "resolution_not_priced"



class TransactionNotFound(NotFound):
    """404: the team has no ledger entry with that id."""

    code = "transaction_not_found"


class UnknownOperation(NotFound):
    """404: the app has no price for the operation and the request gives no amount."""

    code = "unknown_operation"
