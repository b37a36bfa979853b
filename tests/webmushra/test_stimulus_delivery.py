"""Stimuli are served as a careful CDN would: for the session only, recorded, cacheable within it.

* a participant's stimulus tokens and open-reference URLs answer 410 Gone once the session has
  ended (completed, screened out, declined) or the experiment is no longer open;
* every delivered stimulus is recorded on its token (first fetch, count), in one UPDATE;
* within a session a reload is served from the browser cache: ``private, max-age=N`` with N
  bounded by the session, no validators, the same headers for every stimulus of a trial;
  error answers are ``no-store``;
* several byte ranges are answered with the whole file (200), never 416.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from webmushra import rules
from webmushra.models import Participant, StimulusToken
from webmushra.services import experiments

pytestmark = pytest.mark.django_db

#: Headers that may differ between the stimuli of a trial without telling them apart.
PER_RESPONSE = {"Content-Length", "Content-Range", "Date"}


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def trial_urls(p: Participant, number: int = 1) -> list[str]:
    """The open reference's URL and every signal URL of one trial of the participant's plan."""
    trial = p.plan[number - 1]["trial"]
    tokens = StimulusToken.objects.filter(participant=p, stimulus__excerpt__trials__pk=trial)
    return [reverse("participant:reference", args=[p.token, number])] + [
        reverse("participant:stimulus", args=[t.token]) for t in tokens
    ]


def assert_not_stored(r) -> None:
    assert r["Cache-Control"] == "private, no-store" and r["X-Content-Type-Options"] == "nosniff"
    assert "ETag" not in r and "Last-Modified" not in r and "Content-Disposition" not in r


@pytest.fixture
def session(participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    return exp, p, trial_urls(p)


# ----------------------------------------------------------------------------- 410 Gone


@pytest.mark.parametrize("stage", sorted(Participant.FINISHED_STAGES))
def test_audio_urls_are_gone_once_the_session_has_ended(client, session, stage):
    exp, p, urls = session
    assert all(client.get(u).status_code == 200 for u in urls)
    Participant.objects.filter(pk=p.pk).update(stage=stage)
    for url in urls:
        r = client.get(url)
        assert r.status_code == 410 and r.content == b"this session has ended", url
        assert_not_stored(r)
    # One delivery each before the end; a refused fetch is no delivery.
    assert list(StimulusToken.objects.filter(participant=p).values_list("fetches", flat=True)) == [1] * (len(urls) - 1)


def test_audio_urls_are_gone_once_the_experiment_is_closed(client, session):
    exp, p, urls = session
    assert all(client.get(u).status_code == 200 for u in urls)
    experiments.close_experiment(experiment=exp)
    for url in urls:
        r = client.get(url)
        assert r.status_code == 410 and r.content == b"this experiment is closed", url
        assert_not_stored(r)


# ----------------------------------------------------------------------------- delivery record


def test_each_delivery_is_recorded_on_its_token_in_one_update(client, session, django_assert_num_queries):
    exp, p, urls = session
    token = StimulusToken.objects.filter(participant=p).first()
    url = reverse("participant:stimulus", args=[token.token])
    with django_assert_num_queries(2):  # the lookup, the UPDATE
        assert client.get(url).status_code == 200
    token.refresh_from_db()
    first = token.first_fetched_at
    assert token.fetches == 1 and first is not None
    assert client.get(url, HTTP_RANGE="bytes=0-99").status_code == 206
    assert client.get(url).status_code == 200
    token.refresh_from_db()
    assert token.fetches == 3 and token.first_fetched_at == first
    # Not deliveries: an unsatisfiable range, a HEAD.
    size = int(client.get(url)["Content-Length"])
    assert client.get(url, HTTP_RANGE=f"bytes={size}-").status_code == 416
    assert client.head(url).status_code == 200
    token.refresh_from_db()
    assert token.fetches == 4
    # Other tokens are untouched, and the open reference's URL is not recorded on the hidden
    # reference's token: the two are separate things.
    assert client.get(urls[0]).status_code == 200
    others = StimulusToken.objects.filter(participant=p).exclude(pk=token.pk)
    assert list(others.values_list("fetches", "first_fetched_at").distinct()) == [(0, None)]


# ----------------------------------------------------------------------------- caching


def test_a_trials_stimuli_answer_alike_and_may_be_cached_for_the_session(client, session):
    exp, p, urls = session
    max_age = rules.stimulus_cache_seconds(exp.estimated_minutes)
    assert rules.STIMULUS_CACHE_MIN_S <= max_age <= rules.STIMULUS_CACHE_MAX_S
    for spec in (None, "bytes=0-1023", "bytes=-512", "bytes=0-99,200-299"):
        seen = []
        for url in urls:
            r = client.get(url, **({"HTTP_RANGE": spec} if spec else {}))
            assert r.status_code == (206 if spec and "," not in spec else 200), (url, spec)
            body(r)
            assert r["Cache-Control"] == f"private, max-age={max_age}"
            assert r["X-Content-Type-Options"] == "nosniff" and r["Content-Type"] == "audio/wav"
            for validator in ("ETag", "Last-Modified", "Content-Disposition", "Expires", "Vary"):
                assert validator not in r, (url, validator)
            seen.append({k: v for k, v in r.headers.items() if k not in PER_RESPONSE})
        assert all(h == seen[0] for h in seen), seen


def test_the_cache_lifetime_follows_the_session_length_within_bounds(client, session):
    exp, p, urls = session
    assert rules.stimulus_cache_seconds(15) == 2 * 15 * 60
    assert rules.stimulus_cache_seconds(1) == rules.STIMULUS_CACHE_MIN_S
    assert rules.stimulus_cache_seconds(10_000) == rules.STIMULUS_CACHE_MAX_S <= 4 * 3600
    type(exp).objects.filter(pk=exp.pk).update(estimated_minutes=10_000)
    assert client.get(urls[1])["Cache-Control"] == f"private, max-age={rules.STIMULUS_CACHE_MAX_S}"


def test_error_answers_are_never_stored(client, session, settings):
    exp, p, urls = session
    size = int(client.get(urls[1])["Content-Length"])
    for r in (
        client.get(reverse("participant:stimulus", args=["not-a-token"])),
        client.get(reverse("participant:reference", args=["not-a-token", 1])),
        client.get(reverse("participant:reference", args=[p.token, len(p.plan) + 1])),
        client.get(urls[1], HTTP_RANGE=f"bytes={size}-"),
    ):
        assert r.status_code in (404, 416)
        assert_not_stored(r)
    settings.SERVE_MEDIA_WITH = "nginx"  # the range is checked before handing over to nginx
    r = client.get(urls[1], HTTP_RANGE=f"bytes={size}-")
    assert r.status_code == 416 and "X-Accel-Redirect" not in r and r["Content-Range"] == f"bytes */{size}"
    assert_not_stored(r)


# ----------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    "spec", ["bytes=0-99,200-299", "bytes=0-99, 200-299", "bytes=-10,0-5", "bytes=0-0,999999999-", "items=0-5"]
)
def test_several_ranges_or_another_unit_get_the_whole_file(client, session, spec):
    exp, p, urls = session
    full = body(client.get(urls[1]))
    r = client.get(urls[1], HTTP_RANGE=spec)
    assert r.status_code == 200 and body(r) == full and int(r["Content-Length"]) == len(full)
    assert "Content-Range" not in r


def test_single_ranges_still_work(client, session, settings):
    exp, p, urls = session
    full = body(client.get(urls[1]))
    r = client.get(urls[1], HTTP_RANGE="bytes=100-199")
    assert r.status_code == 206 and body(r) == full[100:200] and r["Content-Range"] == f"bytes 100-199/{len(full)}"
    r = client.get(urls[1], HTTP_RANGE="Bytes=-7")
    assert r.status_code == 206 and body(r) == full[-7:]
    assert client.get(urls[1], HTTP_RANGE="bytes=9-3").status_code == 416
    settings.SERVE_MEDIA_WITH = "nginx"  # nginx answers one range itself and several (max_ranges 1) in full
    for spec in ("bytes=100-199", "bytes=0-99,200-299"):
        r = client.get(urls[1], HTTP_RANGE=spec)
        assert r.status_code == 200 and r["X-Accel-Redirect"].startswith("/protected-media/") and not r.content
