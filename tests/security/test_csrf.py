"""CSRF on every form and every POST endpoint.

Every URL of the site (from the resolver) is posted to with ``enforce_csrf_checks``: without
the token it must be refused with Django's CSRF 403, with the token it must get past the
check. The token-authenticated API is exempt by design (a token in a header is not sent by
a browser on its own); with a login session instead of a token it checks CSRF too.
"""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.authtoken.models import Token

from tests.paths import REPO
from webmushra.models import StimulusToken

pytestmark = pytest.mark.django_db

NAMESPACES = {None, "participant", "researcher", "api"}


def named_urls() -> dict[str, tuple[str, object]]:
    """namespace:name -> (route, view) for every named URL outside the admin, plus its login."""
    found: dict[str, tuple[str, object]] = {}

    def walk(patterns, namespace: str | None, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, p.namespace or namespace, prefix + str(p.pattern))
            elif (
                isinstance(p, URLPattern)
                and p.name
                and (namespace in NAMESPACES or (namespace, p.name) == ("admin", "login"))
            ):
                found[f"{namespace}:{p.name}" if namespace else p.name] = (prefix + str(p.pattern), p.callback)

    walk(get_resolver().url_patterns, None, "")
    return found


def is_csrf_failure(response) -> bool:
    return response.status_code == 403 and b"CSRF" in response.content


def test_only_the_api_is_csrf_exempt():
    exempt = sorted(name for name, (_, view) in named_urls().items() if getattr(view, "csrf_exempt", False))
    assert exempt and all(name.startswith("api:") for name in exempt), exempt
    assert {"participant:trial", "participant:screening", "participant:landing", "login"} <= set(named_urls())


def test_every_post_form_in_the_templates_carries_the_token():
    templates = [*(REPO / "webmushra" / "templates").rglob("*.html"), *(REPO / "templates").rglob("*.html")]
    forms = 0
    for path in templates:
        for form in re.findall(r"<form\b[^>]*>.*?</form>", path.read_text(), re.S | re.I):
            if re.search(r"method=[\"']?post", form, re.I):
                forms += 1
                assert "{% csrf_token %}" in form, f"{path.relative_to(REPO)}: a POST form without {{% csrf_token %}}"
    assert forms >= 10


@pytest.fixture
def urls(world):
    p = world["participant"]
    kwargs = {
        **world["kwargs"],
        "token": p.token,
        "number": 1,
        "public_token": world["exp"].public_token,
        "uidb64": "MQ",
        "token_": "set-password",
        "key": "no-such-sound",
    }
    stimulus = StimulusToken.objects.filter(participant=p).first().token
    out: dict[str, str] = {}
    for name, (route, _) in named_urls().items():
        needed = {k: v for k, v in kwargs.items() if f":{k}>" in route or f"<{k}>" in route}
        if name == "participant:stimulus":
            needed["token"] = stimulus
        if name == "password_reset_confirm":
            needed["token"] = "set-password"
        out[name] = reverse(name, kwargs=needed)
    return out


def browser(world, name: str) -> Client:
    """A CSRF-checking browser, logged in as the experiment's owner for the researcher pages."""
    c = Client(enforce_csrf_checks=True)
    if name.startswith(("researcher:", "api:")):
        c.force_login(world["exp"].owner)
    return c


def csrf_token(c: Client) -> str:
    c.get(reverse("login"))  # the login form puts the token in the cookie
    return c.cookies["csrftoken"].value


def test_every_post_without_the_token_is_refused(world, urls):
    refused: list[str] = []
    for name, url in urls.items():
        c = browser(world, name)
        for body in ({"data": {"x": "1"}}, {"data": json.dumps({"x": 1}), "content_type": "application/json"}):
            r = c.post(url, **body)
            # The API's HTML documentation pages answer DRF's CSRF refusal with their own page.
            if not (is_csrf_failure(r) or (name.startswith("api:") and r.status_code == 403)):
                refused.append(f"{name}: {r.status_code}")
    assert not refused, "POSTs without a CSRF token that got past the check:\n" + "\n".join(refused)


def test_every_post_with_the_token_gets_past_the_check(world, urls):
    accepted_posts = set()
    failures: list[str] = []
    # Destructive actions last, so the others still find what they act on.
    order = sorted(urls, key=lambda n: ("delete" in n or n in ("researcher:close", "logout", "api:close"), n))
    for name in order:
        c = browser(world, name)
        token = csrf_token(c)
        # The header carries the token for forms and JSON endpoints alike (as the player sends it).
        r = c.post(urls[name], data="{}", content_type="application/json", HTTP_X_CSRFTOKEN=token)
        if is_csrf_failure(r):
            failures.append(f"{name}: refused with a valid token")
        elif r.status_code != 405:
            accepted_posts.add(name)
    assert not failures, "\n".join(failures)
    # The forms and JSON endpoints of the pages are among those that take a POST.
    assert {
        "participant:landing",
        "participant:consent",
        "participant:level",
        "participant:screening",
        "participant:trial",
        "participant:questionnaire",
        "researcher:render",
        "researcher:open",
        "researcher:close",
        "researcher:excerpts",
        "researcher:settings",
        "researcher:experiment_new",
        "researcher:api_token",
        "login",
        "logout",
        "password_change",
    } <= accepted_posts


def test_a_form_takes_the_token_from_its_hidden_field(world):
    exp = world["exp"]
    c = Client(enforce_csrf_checks=True)
    page = c.get(reverse("participant:landing", args=[exp.public_token]))
    field = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    url = reverse("participant:landing", args=[exp.public_token])
    assert is_csrf_failure(c.post(url, data={"PROLIFIC_PID": "x"}))
    started = c.post(url, data={"PROLIFIC_PID": "x", "csrfmiddlewaretoken": field})
    assert started.status_code == 302 and started.url.startswith("/p/")


def test_json_saves_take_the_token_from_the_header(world):
    p = world["participant"]
    c = Client(enforce_csrf_checks=True)
    token = csrf_token(c)
    url = reverse("participant:screening", args=[p.token])
    body = json.dumps({"answers": []})
    assert is_csrf_failure(c.post(url, data=body, content_type="application/json"))
    assert is_csrf_failure(c.post(url, data=body, content_type="application/json", HTTP_X_CSRFTOKEN="x" * 32))
    ok = c.post(url, data=body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 200 and ok.json()["saved"] is True


def test_the_api_checks_csrf_for_a_login_session_but_not_for_a_token(world):
    exp = world["exp"]
    url = reverse("api:close", kwargs={"pk": exp.pk})
    session = Client(enforce_csrf_checks=True)
    session.force_login(exp.owner)
    refused = session.post(url)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    api = Client(enforce_csrf_checks=True)
    key = Token.objects.create(user=exp.owner).key
    assert api.post(url, HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
    exp.refresh_from_db()
    assert exp.status == "closed"
