"""A Content-Security-Policy for the participant pages.

The participant templates load scripts and styles from the site only (``json_script``
blocks are ``type="application/json"``: data, never executed), so the policy forbids
inline code and every other origin. It is scoped to the ``participant`` URL namespace:
the admin and the API documentation pages load code the policy would block.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

PARTICIPANT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if match is not None and match.namespace == "participant" and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = PARTICIPANT_CSP
        return response
