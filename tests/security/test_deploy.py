"""Production settings: ``check --deploy`` is clean, and the pages carry the security headers
and cookie flags."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys

import pytest
from django.test import Client
from django.urls import reverse

from tests.paths import REPO
from webmushra.middleware import PARTICIPANT_CSP

PRODUCTION = {"SECURE": "1", "DEBUG": "0", "ALLOWED_HOSTS": "tests.example.org"}


def run_django(tmp_path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        # DJANGO_ALLOW_ASYNC_UNSAFE is the test process's own (beside Playwright), not production's.
        if k
        not in (
            "SECURE",
            "DEBUG",
            "SECRET_KEY",
            "ALLOWED_HOSTS",
            "CACHE_URL",
            "DATABASE_URL",
            "DJANGO_ALLOW_ASYNC_UNSAFE",
        )
        and not k.startswith(("SECURE_", "SESSION_", "CSRF_"))
    }
    clean.update(
        VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        **env,
    )
    return subprocess.run([sys.executable, *args], cwd=REPO, env=clean, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_check_deploy_is_clean_with_production_settings(tmp_path):
    out = run_django(
        tmp_path,
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        SECRET_KEY=secrets.token_urlsafe(64),
        **PRODUCTION,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no issues" in out.stdout and "WARNING" not in out.stderr


@pytest.mark.slow
def test_check_deploy_does_fail_without_them(tmp_path):
    """The check above can fail: the development defaults are reported."""
    out = run_django(
        tmp_path,
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        SECRET_KEY=secrets.token_urlsafe(64),
        DEBUG="1",
    )
    assert out.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016", "security.W018"):
        assert check in out.stderr


@pytest.mark.slow
def test_production_settings_values(tmp_path):
    script = (
        "import django, json; django.setup(); from django.conf import settings as s; print(json.dumps({k: getattr(s, k)"
        " for k in ('SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS',"
        " 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SESSION_COOKIE_HTTPONLY', 'CSRF_COOKIE_HTTPONLY',"
        " 'SESSION_COOKIE_SAMESITE', 'CSRF_COOKIE_SAMESITE', 'X_FRAME_OPTIONS', 'SECURE_CONTENT_TYPE_NOSNIFF',"
        " 'SECURE_REFERRER_POLICY', 'SECURE_PROXY_SSL_HEADER', 'DEBUG', 'RATELIMIT_ENABLED')}))"
    )
    out = run_django(tmp_path, ["-c", script], SECRET_KEY=secrets.token_urlsafe(64), **PRODUCTION)
    assert out.returncode == 0, out.stderr
    values = json.loads(out.stdout.strip().splitlines()[-1])
    assert values == {
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "CSRF_COOKIE_SAMESITE": "Lax",
        "X_FRAME_OPTIONS": "DENY",
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin",
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "DEBUG": False,
        "RATELIMIT_ENABLED": True,
    }


@pytest.fixture
def secure(settings):
    """What SECURE=1 switches on, in this process."""
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = settings.SECURE_HSTS_PRELOAD = True
    return settings


@pytest.mark.django_db
def test_participant_pages_carry_the_security_headers_and_cookie_flags(open_experiment, secure):
    exp = open_experiment(n_excerpts=1, seconds=1.0, config={"training": False})
    c = Client()
    url = reverse("participant:landing", args=[exp.public_token])
    assert c.get(url).status_code == 301  # plain HTTP goes to HTTPS
    page = c.get(url, secure=True)
    assert page.status_code == 200
    assert page["X-Content-Type-Options"] == "nosniff"
    assert page["Referrer-Policy"] == "same-origin"
    assert page["X-Frame-Options"] == "DENY"
    assert page["Cross-Origin-Opener-Policy"] == "same-origin"
    assert page["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert page["Content-Security-Policy"] == PARTICIPANT_CSP
    cookie = c.cookies["csrftoken"]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    # The session started here leads to pages with the same headers, the stimuli included.
    nxt = c.post(url, {"csrfmiddlewaretoken": page.context["csrf_token"]}, secure=True, follow=True)
    assert nxt.status_code == 200 and nxt["Content-Security-Policy"] == PARTICIPANT_CSP
    assert nxt["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_the_login_session_cookie_is_secure_httponly_and_lax(client, researcher, secure):
    page = client.get(reverse("login"), secure=True)
    r = client.post(
        reverse("login"),
        {"username": "researcher", "password": "a-long-password-1", "csrfmiddlewaretoken": page.context["csrf_token"]},
        secure=True,
    )
    assert r.status_code == 302
    cookie = client.cookies["sessionid"]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    # The login page, like the participant and researcher pages, runs under the policy.
    assert page["Content-Security-Policy"] == r["Content-Security-Policy"] == PARTICIPANT_CSP


def test_researcher_pages_run_under_the_policy_and_have_no_inline_code(client, researcher, open_experiment):
    exp = open_experiment(n_excerpts=1, seconds=1.0, config={"training": False})
    client.force_login(researcher)
    for name in ("researcher:experiment", "researcher:monitor", "researcher:settings", "researcher:reports"):
        r = client.get(reverse(name, args=[exp.pk]))
        assert r.status_code == 200 and r["Content-Security-Policy"] == PARTICIPANT_CSP, name
    assert "Content-Security-Policy" not in client.get("/admin/")  # the admin loads inline code
    folders = [REPO / "webmushra" / "templates" / "webmushra" / "researcher", REPO / "templates"]
    pages = [p for folder in folders for p in folder.rglob("*.html")]
    assert len(pages) > 8
    for path in pages:
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text, re.I):
            assert "src=" in tag or "application/json" in tag, f"{path.name}: inline script {tag}"
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", text, re.I), f"{path.name}: inline style or handler"


def test_participant_templates_have_no_inline_code():
    """The policy forbids inline scripts, styles and handlers: the participant pages have none."""
    folder = REPO / "webmushra" / "templates" / "webmushra"
    pages = [folder / "base.html", *(folder / "participant").glob("*.html")]
    assert len(pages) > 5
    for path in pages:
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text, re.I):
            assert "src=" in tag, f"{path.name}: inline script {tag}"
            assert 'type="module"' in tag, f"{path.name}: {tag} is not loaded as an ES module"
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", text, re.I), f"{path.name}: inline style or handler"
    scripts = sorted((REPO / "webmushra" / "static" / "webmushra").glob("*.js"))
    participant = {"mushra.js", "engine.js", "loader.js", "savequeue.js", "keyboard.js", "trial.js", "headphone.js"}
    assert participant <= {p.name for p in scripts}
    for path in scripts:
        code = path.read_text()
        assert not re.search(r"\beval\(|new Function\(|setAttribute\(\s*[\"']style|\.innerHTML\s*=", code), path.name
        if path.name in participant:
            # ES modules that share nothing through globals (tests read the player via its events).
            assert not re.search(r"\b(window|globalThis)\.\w+\s*=[^=]", code), f"{path.name} sets a global"


def test_a_database_that_does_not_answer_gives_503_with_retry_after(client, participant_at_trials, monkeypatch):
    from django.db import OperationalError

    from webmushra.services import sessions

    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})

    def down(**kwargs):
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    monkeypatch.setattr(sessions, "submit_trial", down)
    r = client.post(reverse("participant:trial", args=[p.token, 1]), '{"ratings": {}}', content_type="application/json")
    assert r.status_code == 503 and r["Retry-After"] == "5" and "try again" in r.json()["error"]
    assert "5432" not in r.content.decode()  # no server details in the answer
