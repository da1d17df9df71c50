"""Shared request/response building blocks: camelCase JSON, credit amounts as numbers, and the
bases of every request body, which refuse unknown fields and text that PostgreSQL cannot store."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    RootModel,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

# Credits are Decimal with two places inside; JSON carries them as numbers (2 places are exact).
Credits = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


def decimal_json_schema(text_pattern: str, *, bound: float | None = None) -> Any:
    """``json_schema_extra`` for a Decimal field: a number in steps of 0.01 (within ±``bound``
    unless the field sets its own limits), or text matching ``text_pattern`` (the forms the server
    takes), instead of any number or any text."""

    def extra(schema: dict[str, Any]) -> None:
        for form in schema.get("anyOf", ()):
            if form.get("type") == "number":
                form["multipleOf"] = 0.01
                if bound is not None:
                    form.setdefault("maximum", bound)
                    if "exclusiveMinimum" not in form:
                        form.setdefault("minimum", -bound)
            elif form.get("type") == "string":
                form["pattern"] = text_pattern

    return extra


# A credit amount in a request: at most 12 digits before the point and 2 after (numeric(14,2)),
# as a JSON number or as text ("12.50"); signed, at least 0, or more than 0.
_CREDITS = {"max_digits": 14, "decimal_places": 2, "allow_inf_nan": False}
_DIGITS = r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,2})?"
_POSITIVE = r"(?:[1-9][0-9]{0,11}(?:\.[0-9]{1,2})?|0\.(?:[1-9][0-9]?|0[1-9]))"
_BOUND = 999_999_999_999.99
CreditAmount = Annotated[Decimal, Field(**_CREDITS, json_schema_extra=decimal_json_schema(f"^-?{_DIGITS}$", bound=_BOUND))]
NonNegativeCredits = Annotated[Decimal, Field(
    ge=0, **_CREDITS, json_schema_extra=decimal_json_schema(f"^{_DIGITS}$", bound=_BOUND))]
PositiveCredits = Annotated[Decimal, Field(
    gt=0, **_CREDITS, json_schema_extra=decimal_json_schema(f"^{_POSITIVE}$", bound=_BOUND))]

def utc(value: dt.datetime) -> dt.datetime:
    """An instant in UTC: without an offset it is UTC already. Raises ``ValueError`` when the
    instant is outside years 1..9999 in UTC (``0001-01-01T00:00+14:00``), which PostgreSQL's
    driver cannot send."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("the instant is out of range (years 1 to 9999 in UTC)") from None


def _iso_8601(value: Any) -> Any:
    if not isinstance(value, (str, dt.datetime)) or isinstance(value, str) and not _ISO_DATE_TIME.match(value):
        raise ValueError("expected an ISO 8601 date and time (or a date: its midnight), e.g. 2026-01-31T12:00:00Z")
    return value


_ISO_DATE_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:$|[Tt ][0-9]{2}:[0-9]{2})")
# A timestamp in a request (ISO 8601, not a number of seconds; a date alone is its midnight; without
# an offset it is UTC), as an aware UTC datetime.
UtcDatetime = Annotated[dt.datetime, BeforeValidator(_iso_8601), AfterValidator(utc)]

# "WIDTHxHEIGHT" with the default limits (each side a multiple of 8 from 64 to 2048), as a pattern
# so that the OpenAPI schema lets a client or fuzzer produce only sizes the server takes.
_EVEN = "(?:00|08|16|24|32|40|48|56|64|72|80|88|96)"  # two last digits after an even digit
_ODD = "(?:04|12|20|28|36|44|52|60|68|76|84|92)"  # ... after an odd one
_SIDE = f"(?:64|72|80|88|96|[2468]{_EVEN}|[13579]{_ODD}|1(?:[02468]{_EVEN}|[13579]{_ODD})|20(?:00|08|16|24|32|40|48))"
RESOLUTION_PATTERN = f"^ *{_SIDE} *[xX\u00d7] *{_SIDE} *$"
# PostgreSQL stores neither NUL characters nor UTF-16 surrogates (a pair decodes to one character
# in Python, so any surrogate left in a str is a lone one).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _flaw(text: str) -> str | None:
    if match := _UNSTORABLE.search(text):
        char = match.group()
        return "a NUL character" if char == "\x00" else f"a lone surrogate (U+{ord(char):04X})"
    return None


def unstorable_text(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str, str] | None:
    """The first string in ``value`` (nested in lists and dicts, keys included) that PostgreSQL
    cannot store, as ``(dotted path, what is wrong)``, e.g. ``("metadata.note", "contains a NUL
    character")``; None when all its text can be stored."""
    where = ".".join(str(part) for part in path)
    if isinstance(value, str):
        return (where, f"contains {flaw}") if (flaw := _flaw(value)) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (flaw := _flaw(key)):
                return where, f"has a key that contains {flaw}"
            if found := unstorable_text(item, (*path, key)):
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if found := unstorable_text(item, (*path, index)):
                return found
    return None


def _refuse_unstorable_text(data: Any) -> Any:
    if found := unstorable_text(data):
        field, problem = found
        raise PydanticCustomError(
            "invalid_text", "{field} {problem}, which PostgreSQL cannot store", {"field": field, "problem": problem}
        )
    return data


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class RequestModel(CamelModel):
    """The base of every JSON (or form) request body: an unknown field is 422 (``numImage`` is a
    typo, not something to ignore), and so is text with a NUL character or a lone surrogate
    anywhere in the body (``invalid_text``). ``tests/api/test_openapi.py`` checks that every
    operation's body is one of these or a ``RequestMap``."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        return _refuse_unstorable_text(data)


K = TypeVar("K")
V = TypeVar("V")


class RequestMap(RootModel[dict[K, V]], Generic[K, V]):
    """A request body that is a JSON object with free keys (``RequestMap[OperationName,
    CreditAmount]``), checked for text like ``RequestModel``."""

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        return _refuse_unstorable_text(data)
