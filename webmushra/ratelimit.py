"""Per-client request limits for the participant pages, kept in Django's cache.

A fixed window per (endpoint group, client address): at most ``limit`` requests in each
window of ``period`` seconds; the next one is answered 429 with ``Retry-After`` (the
seconds left in the window). Counters live in the ``RATELIMIT_CACHE`` cache, by default a
file cache under ``VAR_DIR/cache`` that every web process on the machine shares, so no
Redis is needed; ``CACHE_URL=redis://...`` moves them to Redis. With the file cache,
concurrent requests may each read the same count (its ``incr`` is read-then-write), so
a limit can be overshot by the number of requests in flight, never undershot.

When the cache fails the request is let through and the failure logged: a broken cache
must not stop participants from saving their ratings.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600}
#: The clock the windows are counted on (a module attribute so tests can fix it).
_clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` requests per ``period`` seconds."""

    limit: int
    period: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    count: int
    retry_after: int


def parse_rate(text: str) -> Rate:
    """``"30/60"`` (requests / seconds) or ``"30/m"`` (s, m, h) -> Rate."""
    try:
        count, _, period = text.strip().partition("/")
        seconds = _UNITS[period] if period in _UNITS else int(period)
        rate = Rate(int(count), seconds)
    except (ValueError, KeyError):
        raise ValueError(f"rate {text!r}: expected '<requests>/<seconds>' or '<requests>/<s|m|h>'") from None
    if rate.limit < 1 or rate.period < 1:
        raise ValueError(f"rate {text!r}: requests and period must both be at least 1")
    return rate


def client_address(request: HttpRequest) -> str:
    """The client's IP address.

    ``REMOTE_ADDR``, unless a trusted proxy is declared (``SECURE_PROXY_SSL_HEADER`` is
    set, i.e. ``BEHIND_PROXY``/``SECURE``): then the last ``X-Forwarded-For`` entry,
    the address the proxy itself saw. Earlier entries are whatever the client sent
    (nginx's ``$proxy_add_x_forwarded_for`` appends), so they cannot key a limit.
    """
    remote = request.META.get("REMOTE_ADDR", "") or "unknown"
    if not settings.SECURE_PROXY_SSL_HEADER:
        return remote
    forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if not forwarded:
        return remote
    try:
        return str(ipaddress.ip_address(forwarded[-1]))
    except ValueError:
        return remote


def rate_for(group: str) -> Rate:
    try:
        return parse_rate(settings.RATELIMIT_RATES[group])
    except KeyError:
        raise ValueError(f"rate-limit group {group!r} has no rate in settings.RATELIMIT_RATES") from None


def hit(group: str, address: str, now: float | None = None) -> Decision:
    """Count one request of ``address`` to ``group``; say whether it is within the limit."""
    rate = rate_for(group)
    now = _clock() if now is None else now
    window = int(now // rate.period)
    retry_after = max(1, math.ceil((window + 1) * rate.period - now))
    key = f"ratelimit:{group}:{address}:{window}"
    try:
        cache = caches[settings.RATELIMIT_CACHE]
        # add() is a no-op when the key exists; incr() is atomic on Redis and the database cache.
        cache.add(key, 0, timeout=rate.period + 1)
        try:
            count = cache.incr(key)
        except ValueError:  # expired (or culled) between add() and incr()
            cache.set(key, 1, timeout=rate.period + 1)
            count = 1
    except Exception:
        log.exception("rate limit %s: the cache failed; letting the request through", group)
        return Decision(True, 0, 0)
    return Decision(count <= rate.limit, count, retry_after)


def too_many(request: HttpRequest, retry_after: int, as_json: bool) -> HttpResponse:
    message = f"too many requests; retry in {retry_after} s"
    if as_json:
        response: HttpResponse = JsonResponse({"error": message}, status=429)
    else:
        response = HttpResponse(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Too many requests</title></head>'
            f"<body><h1>Too many requests</h1><p>{escape(message.capitalize())}.</p></body></html>",
            status=429,
            content_type="text/html; charset=utf-8",
        )
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response


def ratelimit(group: str, methods: Iterable[str] | None = None, as_json: bool = False) -> Callable:
    """Limit a view per client address; ``methods`` (None: all) are the ones counted.

    ``as_json`` answers 429 as ``{"error": ...}`` (the player's ``postWithRetry`` waits
    for ``Retry-After``); otherwise a short HTML page.
    """
    counted = {m.upper() for m in methods} if methods is not None else None
    rate_for(group)  # an unknown group fails at import, not at the first request

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if settings.RATELIMIT_ENABLED and (counted is None or request.method in counted):
                decision = hit(group, client_address(request))
                if not decision.allowed:
                    log.warning(
                        "rate limit %s exceeded by %s (%d requests)", group, client_address(request), decision.count
                    )
                    return too_many(request, decision.retry_after, as_json)
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
