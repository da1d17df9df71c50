"""The dashboard: server-rendered pages mounted in the API's app (``api/app.py`` calls
``web.app.install``), calling the same services as the JSON API.

- ``app.py``: ``install(app, settings)``: the routers, ``/static`` and the CSRF middleware.
- ``routing.py``: ``WebRoute``, the route class of every page (security headers, HTML errors,
  redirect to sign-in), and ``web_router()``.
- ``templating.py``: the Jinja2 environment (``jinja2-fragments``), ``render`` (a page or one of
  its blocks for htmx), asset URLs with content hashes, the navigation (``NAV``).
- ``auth.py``: the signed-in person from the session cookie (``CurrentUserDep``, ``WebPrincipalDep``
  giving the ``Principal`` the services take).
- One module per area: ``public.py`` (landing, sign-up, sign-in, sign-out, invites, set password),
  ``home.py``, ``keys.py``, ``team.py``, ``catalog.py``, ``models.py`` (custom models), ``generate.py`` (and
  ``spending.py``: cost estimates and refusals in words for these three), ``gallery.py``, ``jobs.py``,
  ``credits.py``, ``webhooks.py`` (``paging.py``: list filters from the query string and next-page links).
"""
