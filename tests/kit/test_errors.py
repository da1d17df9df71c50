from pixelmint.accounts.errors import TeamNotFound
from pixelmint.credits.errors import AppExists, AppNotFound
from pixelmint.kit.errors import PixelmintError, responses


def test_responses_group_the_codes_of_each_status_in_order() -> None:
    assert responses(AppNotFound, AppExists, TeamNotFound) == {
        404: {"description": "app_not_found, team_not_found"},
        409: {"description": "app_exists"},
    }


def _subclasses(cls: type[PixelmintError]) -> list[type[PixelmintError]]:
    return [cls, *(sub for child in cls.__subclasses__() for sub in _subclasses(child))]


def test_each_stable_code_has_one_error_class() -> None:
    """One class per code: a second class for a code already taken is a duplicate to merge."""
    import pixelmint.api.app  # noqa: F401 - imports every domain, so every error class exists

    owners: dict[str, set[str]] = {}
    for cls in _subclasses(PixelmintError):
        if "code" in vars(cls):
            owners.setdefault(cls.code, set()).add(f"{cls.__module__}.{cls.__qualname__}")
    # Stripe's webhook signature (400, Stripe's convention) and a signed file URL (403) both answer
    # invalid_signature: the same meaning for two audiences, kept for clients that match on it.
    owners["invalid_signature"] -= {"pixelmint.billing.errors.InvalidSignature", "pixelmint.storage.errors.InvalidSignature"}
    assert {code: names for code, names in owners.items() if len(names) > 1} == {}
    assert "invalid_cursor" in owners and "value_out_of_range" in owners
