"""The arena's Routes tab in a real browser: draw the route of the example prompt, see it, click an edge."""
from __future__ import annotations

import pytest

from ..test_app import app_url, browser, open_arena  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


def test_the_routes_tab_draws_a_route(browser, app_url):  # noqa: F811
    page, errors = open_arena(browser, app_url)
    page.get_by_text("Routes", exact=True).click()
    page.get_by_role("button", name="Draw the route").click()
    page.locator(".routes-status").get_by_text("Route of").wait_for(timeout=120_000)
    title = page.get_by_text("route to the prediction after")
    title.wait_for(timeout=30_000)
    assert page.locator(".js-plotly-plot").count() >= 3  # route, an edge's heads, the lens
    assert not errors, errors
