"""A Content-Security-Policy for the participant and researcher pages and the login.

Those templates load scripts and styles from the site only (``json_script`` blocks are
``type="application/json"``: data, never executed), so the policy forbids inline code and
every other origin. The admin and the API documentation pages load code the policy would
block, so they are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import translation
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext

from .i18n import participant_language

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


#: Participant URLs that answer with audio: alike in every language (no Vary, no Content-Language).
LANGUAGE_FREE_URL_NAMES = frozenset({"stimulus", "reference", "screening_audio"})


class ParticipantLanguageMiddleware:
    """Participant pages speak the participant's language (webmushra/i18n.py): the link's
    ``?lang=`` (kept in a cookie for the rest of the session), else the browser's
    Accept-Language, else English. Every other page (researcher, admin, API) stays English.

    The language is chosen once the URL is resolved (``process_view``), so only the
    ``participant`` namespace is affected; it is switched back after each response.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self.get_response(request)
            language = getattr(request, "participant_language", None)
            if language is not None:
                # Each answer depends on the link's ?lang=, the cookie and the browser's languages.
                patch_vary_headers(response, ("Accept-Language", "Cookie"))
                response.headers.setdefault("Content-Language", language)
                if getattr(request, "participant_language_chosen", False):
                    response.set_cookie(
                        settings.LANGUAGE_COOKIE_NAME,
                        language,
                        max_age=settings.LANGUAGE_COOKIE_AGE,
                        path=settings.LANGUAGE_COOKIE_PATH,
                        secure=settings.SESSION_COOKIE_SECURE,
                        httponly=True,
                        samesite="Lax",
                    )
            return response
        finally:
            if hasattr(request, "participant_language"):
                translation.activate(request.language_before)  # type: ignore[attr-defined]

    def process_view(self, request: HttpRequest, view_func: Callable, view_args: tuple, view_kwargs: dict) -> None:
        match = getattr(request, "resolver_match", None)
        if match is None or match.namespace != "participant" or match.url_name in LANGUAGE_FREE_URL_NAMES:
            return None
        language, chosen = participant_language(request)
        request.language_before = translation.get_language() or settings.LANGUAGE_CODE  # type: ignore[attr-defined]
        translation.activate(language)
        request.LANGUAGE_CODE = language
        request.participant_language = language  # type: ignore[attr-defined]
        request.participant_language_chosen = chosen  # type: ignore[attr-defined]
        return None


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
        message = gettext("the service is briefly unavailable; please try again in a few seconds")
        response: HttpResponse
        if "application/json" in request.headers.get("Accept", "") or request.content_type == "application/json":
            response = JsonResponse({"error": message}, status=503)
        else:
            response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(DATABASE_RETRY_AFTER)
        response["Cache-Control"] = "no-store"
        return response
