from pixelmint.credits.errors import AppExists, AppNotFound, TeamNotFound
from pixelmint.kit.errors import responses


def test_responses_group_the_codes_of_each_status_in_order() -> None:
    assert responses(AppNotFound, AppExists, TeamNotFound) == {
        404: {"description": "app_not_found, team_not_found"},
        409: {"description": "app_exists"},
    }
