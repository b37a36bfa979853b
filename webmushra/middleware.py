"""A Content-Security-Policy for the participant and researcher pages and the login.

Those templates load scripts and styles from the site only (``json_script`` blocks are
``type="application/json"``: data, never executed), so the policy forbids inline code and
every other origin. The admin and the API documentation pages load code the policy would
block, so they are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

PARTICIPANT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


#: URL namespaces and names (django.contrib.auth's pages have no namespace) under the policy.
CSP_NAMESPACES = frozenset({"participant", "researcher"})
CSP_URL_NAMES = frozenset({"login", "logout", "password_change", "password_change_done"})


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if (
            match is not None
            and "Content-Security-Policy" not in response
            and (match.namespace in CSP_NAMESPACES or match.url_name in CSP_URL_NAMES)
        ):
            response["Content-Security-Policy"] = PARTICIPANT_CSP
        return response


#: Seconds a client is asked to wait when the database does not answer.
DATABASE_RETRY_AFTER = 5


class DatabaseUnavailableMiddleware:
    """A database that does not answer is a temporary outage, not a bug: 503 with Retry-After
    (the player's save queue waits and sends again), never 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        log.error("database unavailable on %s %s: %s", request.method, request.path, exception)
        message = "the service is briefly unavailable; please try again in a few seconds"
        response: HttpResponse
        if "application/json" in request.headers.get("Accept", "") or request.content_type == "application/json":
            response = JsonResponse({"error": message}, status=503)
        else:
            response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(DATABASE_RETRY_AFTER)
        response["Cache-Control"] = "no-store"
        return response
