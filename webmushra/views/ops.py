"""Operator endpoints."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase

from .. import ratelimit


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers and the broker is reachable; 503 otherwise."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report any failure as text
        checks["database"] = f"error: {exc}"
    try:
        from config.celery import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {exc}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"ok": ok, **checks}, status=200 if ok else 503)


@ratelimit.ratelimit("login", methods=["POST"])
def login(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
    """Django's login page, with sign-in attempts limited per address (above) and per account,
    so a password cannot be guessed from many addresses either."""
    username = request.POST.get("username", "").strip().lower()[:150] if request.method == "POST" else ""
    if username and settings.RATELIMIT_ENABLED:
        decision = ratelimit.hit("login_account", username)
        if not decision.allowed:
            return ratelimit.too_many(request, decision.retry_after, as_json=False)
    return LoginView.as_view()(request, *args, **kwargs)
