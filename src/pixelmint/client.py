"""A typed Python client for Pixelmint's credit API, for other apps.

    from pixelmint.client import PixelmintCredits, InsufficientCreditsError

    credits = PixelmintCredits("https://pixelmint.example.com", service_key="pms_…")
    check = credits.validate_credits(team_id, "deck")
    if check.has_credits:
        build_the_deck()
        credits.consume_credits(team_id, "deck", description="deck 'Spanish verbs'")

Long operations hold credits first: ``hold = credits.reserve(team_id, "video", ttl_seconds=600)``,
then ``credits.capture(hold.hold_id)`` on success or ``credits.release(hold.hold_id)`` on failure.
``AsyncPixelmintCredits`` has the same methods as coroutines. Errors raise ``CreditApiError`` (with
``status``, ``code``, ``body``); 402 raises its subclass ``InsufficientCreditsError`` carrying
``required_credits`` and ``available_credits``. Amounts are ``Decimal`` credits.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx


class CreditApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('error')}: {body.get('message')}")
        self.status = status
        self.code = body.get("error", "unknown")
        self.body = body


class InsufficientCreditsError(CreditApiError):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.required_credits = Decimal(str(body.get("requiredCredits", "0")))
        self.available_credits = Decimal(str(body.get("availableCredits", "0")))


@dataclass(frozen=True)
class Validation:
    has_credits: bool
    available_credits: Decimal
    required_credits: Decimal


@dataclass(frozen=True)
class Consumption:
    transaction_id: int
    consumed_credits: Decimal
    available_credits: Decimal


@dataclass(frozen=True)
class Balance:
    available_credits: Decimal
    reserved_credits: Decimal
    bonus_credits: Decimal


@dataclass(frozen=True)
class Hold:
    hold_id: uuid.UUID
    team_id: uuid.UUID
    operation: str
    amount: Decimal
    status: str
    captured_amount: Decimal | None
    expires_at: dt.datetime | None


def _d(value: Any) -> Decimal:
    return Decimal(str(value))


def _hold(body: dict[str, Any]) -> Hold:
    return Hold(
        hold_id=uuid.UUID(body["holdId"]), team_id=uuid.UUID(body["teamId"]), operation=body["operation"],
        amount=_d(body["amount"]), status=body["status"],
        captured_amount=None if body.get("capturedAmount") is None else _d(body["capturedAmount"]),
        expires_at=dt.datetime.fromisoformat(body["expiresAt"]) if body.get("expiresAt") else None,
    )


def _payload(team_id: uuid.UUID | str, operation: str, amount: Decimal | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"teamId": str(team_id), "operation": operation, **{k: v for k, v in extra.items() if v is not None}}
    if amount is not None:
        body["amount"] = str(amount)
    return body


def _check(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {"error": "bad_response", "message": response.text[:200]}
    if response.status_code == 402:
        raise InsufficientCreditsError(response.status_code, body)
    if response.status_code >= 400:
        raise CreditApiError(response.status_code, body)
    return body


class _Requests:
    """Request shapes shared by the sync and async clients."""

    @staticmethod
    def validate(team_id, operation, amount):
        return "POST", "/api/v1/credits/validate", _payload(team_id, operation, amount), {}

    @staticmethod
    def consume(team_id, operation, amount, description, metadata, idempotency_key):
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = _payload(team_id, operation, amount, description=description, metadata=metadata)
        return "POST", "/api/v1/credits/consume", body, headers

    @staticmethod
    def reserve(team_id, operation, amount, ttl_seconds):
        return "POST", "/api/v1/credits/reserve", _payload(team_id, operation, amount, ttlSeconds=ttl_seconds), {}

    @staticmethod
    def capture(hold_id, amount):
        body: dict[str, Any] = {"holdId": str(hold_id)}
        if amount is not None:
            body["amount"] = str(amount)
        return "POST", "/api/v1/credits/capture", body, {}

    @staticmethod
    def release(hold_id):
        return "POST", "/api/v1/credits/release", {"holdId": str(hold_id)}, {}


def _balance(b: dict[str, Any]) -> Balance:
    return Balance(_d(b["availableCredits"]), _d(b["reservedCredits"]), _d(b["bonusCredits"]))


def _validation(b: dict[str, Any]) -> Validation:
    return Validation(b["hasCredits"], _d(b["availableCredits"]), _d(b["requiredCredits"]))


def _consumption(b: dict[str, Any]) -> Consumption:
    return Consumption(b["transactionId"], _d(b["consumedCredits"]), _d(b["availableCredits"]))


class PixelmintCredits:
    """Synchronous client (``httpx.Client``). ``transport`` lets tests route to an in-process app."""

    def __init__(self, base_url: str, service_key: str, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {service_key}"})

    def _call(self, method: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        return _check(self._http.request(method, path, json=body, headers=headers))

    def validate_credits(self, team_id: uuid.UUID | str, operation: str, amount: Decimal | None = None) -> Validation:
        return _validation(self._call(*_Requests.validate(team_id, operation, amount)))

    def consume_credits(self, team_id: uuid.UUID | str, operation: str, amount: Decimal | None = None, *,
                        description: str | None = None, metadata: dict[str, Any] | None = None,
                        idempotency_key: str | None = None) -> Consumption:
        return _consumption(self._call(*_Requests.consume(team_id, operation, amount, description, metadata, idempotency_key)))

    def get_balance(self, team_id: uuid.UUID | str) -> Balance:
        return _balance(_check(self._http.get("/api/v1/credits/team-balance", params={"teamId": str(team_id)})))

    def reserve(self, team_id: uuid.UUID | str, operation: str, amount: Decimal | None = None, *,
                ttl_seconds: int = 300) -> Hold:
        return _hold(self._call(*_Requests.reserve(team_id, operation, amount, ttl_seconds)))

    def capture(self, hold_id: uuid.UUID | str, amount: Decimal | None = None) -> Hold:
        return _hold(self._call(*_Requests.capture(hold_id, amount)))

    def release(self, hold_id: uuid.UUID | str) -> Hold:
        return _hold(self._call(*_Requests.release(hold_id)))

    def close(self) -> None:
        self._http.close()


class AsyncPixelmintCredits:
    """Asynchronous client (``httpx.AsyncClient``), same methods as ``PixelmintCredits``."""

    def __init__(self, base_url: str, service_key: str, *, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport,
                                       headers={"Authorization": f"Bearer {service_key}"})

    async def _call(self, method: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        return _check(await self._http.request(method, path, json=body, headers=headers))

    async def validate_credits(self, team_id: uuid.UUID | str, operation: str, amount: Decimal | None = None) -> Validation:
        return _validation(await self._call(*_Requests.validate(team_id, operation, amount)))

    async def consume_credits(self, team_id: uuid.UUID | str, operation: str, amount: Decimal | None = None, *,
                              description: str | None = None, metadata: dict[str, Any] | None = None,
                              idempotency_key: str | None = None) -> Consumption:
        return _consumption(await self._call(*_Requests.consume(team_id, operation, amount, description, metadata,
                                                                  idempotency_key)))

    async def get_balance(self, team_id: uuid.UUID | str) -> Balance:
        return _balance(_check(await self._http.get("/api/v1/credits/team-balance", params={"teamId": str(team_id)})))

    async def reserve(self, team_id: uuid.UUID | str, operation: str, amount: Decimal | None = None, *,
                      ttl_seconds: int = 300) -> Hold:
        return _hold(await self._call(*_Requests.reserve(team_id, operation, amount, ttl_seconds)))

    async def capture(self, hold_id: uuid.UUID | str, amount: Decimal | None = None) -> Hold:
        return _hold(await self._call(*_Requests.capture(hold_id, amount)))

    async def release(self, hold_id: uuid.UUID | str) -> Hold:
        return _hold(await self._call(*_Requests.release(hold_id)))

    async def aclose(self) -> None:
        await self._http.aclose()
