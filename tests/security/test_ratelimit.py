"""Rate limits on the participant endpoints: 429 with Retry-After, per client address and
endpoint group, shared by processes through the file cache (no Redis), open on cache failure."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from django.core.cache.backends.base import BaseCache
from django.test import Client
from django.urls import reverse

from tests.paths import REPO
from webmushra import ratelimit
from webmushra.models import new_token

pytestmark = pytest.mark.django_db

#: Inside the window [960, 1020) of a 60 s period: 19.5 s left, so Retry-After is 20.
NOW = 1000.5


class BrokenCache(BaseCache):
    """A cache whose server is gone: every call raises."""

    def __init__(self, location: str, params: dict) -> None:
        super().__init__(params)

    def _fail(self, *args, **kwargs):
        raise ConnectionError("cache server unreachable")

    add = get = set = incr = delete = touch = has_key = clear = _fail


@pytest.fixture
def limited(settings, tmp_path, monkeypatch):
    """Small limits, a fixed clock and a file cache of this test's own (under tmp_path)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        }
    }
    settings.RATELIMIT_ENABLED = True
    # Every group keeps a rate (the URLconf may be imported for the first time under these
    # settings, and a decorated view with no rate fails at import); the tested ones are small.
    settings.RATELIMIT_RATES = {**settings.RATELIMIT_RATES, "start": "2/60", "save": "3/60", "media": "5/m"}
    monkeypatch.setattr(ratelimit, "_clock", lambda: NOW)
    return tmp_path


def save_url() -> str:
    # An unknown participant: the limit is checked before the view looks the token up (404).
    return reverse("participant:trial", args=[new_token(), 1])


def post_json(client, url: str, **extra):
    return client.post(url, data=json.dumps({"ratings": {}}), content_type="application/json", **extra)


def test_parse_rate():
    assert ratelimit.parse_rate("30/60") == ratelimit.Rate(30, 60)
    assert ratelimit.parse_rate("5/m") == ratelimit.Rate(5, 60)
    assert ratelimit.parse_rate("1/h") == ratelimit.Rate(1, 3600)
    for bad in ("30", "x/60", "30/fortnight", "0/60", "3/0"):
        with pytest.raises(ValueError, match="rate"):
            ratelimit.parse_rate(bad)


def test_a_json_save_over_the_limit_is_429_with_retry_after(client, limited):
    url = save_url()
    assert [post_json(client, url).status_code for _ in range(3)] == [404, 404, 404]
    refused = post_json(client, url)
    assert refused.status_code == 429
    assert refused["Retry-After"] == "20"
    assert refused.json() == {"error": "too many requests; retry in 20 s"}
    # GETs of a trial page are not saves: they are not counted against the save limit.
    assert client.get(url).status_code == 404


def test_the_landing_post_over_the_limit_is_an_html_429(client, limited):
    url = reverse("participant:landing", args=[new_token()])
    assert [client.post(url).status_code for _ in range(2)] == [404, 404]
    refused = client.post(url)
    assert refused.status_code == 429 and refused["Retry-After"] == "20"
    assert refused["Content-Type"].startswith("text/html")
    assert b"Too many requests" in refused.content and b"retry in 20 s" in refused.content


def test_stimulus_gets_have_their_own_limit(client, limited):
    url = reverse("participant:stimulus", args=[new_token()])
    assert [client.get(url).status_code for _ in range(6)] == [404] * 5 + [429]
    # Saves are another group: still allowed.
    assert post_json(client, save_url()).status_code == 404


def test_a_new_window_starts_a_new_count(client, limited, monkeypatch):
    url = save_url()
    statuses = [post_json(client, url).status_code for _ in range(4)]
    assert statuses[-1] == 429
    monkeypatch.setattr(ratelimit, "_clock", lambda: NOW + 20)
    assert post_json(client, url).status_code == 404


def test_different_addresses_are_counted_apart(client, limited):
    url = save_url()
    for _ in range(3):
        post_json(client, url, REMOTE_ADDR="10.0.0.1")
    assert post_json(client, url, REMOTE_ADDR="10.0.0.1").status_code == 429
    assert post_json(client, url, REMOTE_ADDR="10.0.0.2").status_code == 404


def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(client, limited, settings):
    url = save_url()
    settings.SECURE_PROXY_SSL_HEADER = None
    # Without a trusted proxy the header is the client's own word: a new value each time changes nothing.
    statuses = [post_json(client, url, HTTP_X_FORWARDED_FOR=f"10.1.0.{i}").status_code for i in range(4)]
    assert statuses == [404, 404, 404, 429]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Behind the proxy the address it appended (the last hop) is the client; earlier hops are ignored.
    hops = [post_json(client, url, HTTP_X_FORWARDED_FOR=f"6.6.6.{i}, 203.0.113.7").status_code for i in range(4)]
    assert hops == [404, 404, 404, 429]
    assert post_json(client, url, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 404


@pytest.mark.slow
def test_processes_share_the_counts_through_the_file_cache(client, limited):
    """Two requests counted by another process plus this one's: no Redis anywhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("CACHE_URL", "DATABASE_URL")}
    env.update(VAR_DIR=str(limited), RATELIMIT_SAVE="3/60", DJANGO_SETTINGS_MODULE="config.settings")
    script = (
        "import django; django.setup(); from django.conf import settings; from webmushra import ratelimit;"
        "assert settings.CACHES['default']['BACKEND'].endswith('FileBasedCache');"
        f"print([ratelimit.hit('save', '198.51.100.4', now={NOW}).count for _ in range(2)])"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[1, 2]"
    url = save_url()
    assert post_json(client, url, REMOTE_ADDR="198.51.100.4").status_code == 404  # the third request
    assert post_json(client, url, REMOTE_ADDR="198.51.100.4").status_code == 429  # the fourth


def test_a_failing_cache_lets_requests_through_and_logs(client, limited, settings, caplog):
    settings.CACHES = {"default": {"BACKEND": "tests.security.test_ratelimit.BrokenCache"}}
    url = save_url()
    with caplog.at_level(logging.ERROR, logger="webmushra.ratelimit"):
        statuses = [post_json(client, url).status_code for _ in range(6)]
    assert statuses == [404] * 6
    failures = [r for r in caplog.records if r.name == "webmushra.ratelimit"]
    assert len(failures) == 6 and "cache failed" in failures[0].getMessage()
    assert "cache server unreachable" in failures[0].exc_text


def test_limits_can_be_switched_off(client, limited, settings):
    settings.RATELIMIT_ENABLED = False
    url = save_url()
    assert {post_json(client, url).status_code for _ in range(6)} == {404}


def test_real_sessions_are_refused_past_the_start_limit(client, limited, open_experiment):
    from webmushra.models import Participant

    exp = open_experiment(n_excerpts=1, seconds=1.0, config={"training": False})
    url = reverse("participant:landing", args=[exp.public_token])
    # Three browsers from one address (one browser would resume its own participant).
    assert [Client().post(url).status_code for _ in range(3)] == [302, 302, 429]
    assert Participant.objects.filter(experiment=exp).count() == 2


def test_sign_in_attempts_are_limited_per_address_and_per_account(client, limited, settings, researcher):
    settings.RATELIMIT_RATES = {**settings.RATELIMIT_RATES, "login": "6/60", "login_account": "3/60"}
    url = reverse("login")
    wrong = {"username": "researcher", "password": "not-the-password"}
    # Three wrong passwords for one account, then that account is refused for the window ...
    assert [client.post(url, wrong).status_code for _ in range(4)] == [200, 200, 200, 429]
    # ... even with the right password, and from another address.
    right = {"username": "Researcher", "password": "a-long-password-1"}
    assert Client(REMOTE_ADDR="10.0.0.9").post(url, right).status_code == 429
    # Another account from the first address still gets its tries, up to the address's limit.
    other = {"username": "someone-else", "password": "x"}
    assert [client.post(url, other).status_code for _ in range(3)] == [200, 200, 429]
    # GET (the form) is never counted.
    assert client.get(url).status_code == 200
