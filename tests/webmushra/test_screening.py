"""The flow a reviewer can trust: level before the headphone check, a check whose answers never
leave the server and whose answers count only for sounds the server sent, the level's gain on
every later page, and Prolific exits (completion and screen-out) recorded and followed."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import scipy.signal
from django.test import Client
from django.urls import reverse

from webmushra import headphone, rules
from webmushra.errors import ServiceError
from webmushra.models import Participant
from webmushra.services import screening, sessions

_JSON_SCRIPT = re.compile(r'<script id="([\w-]+)" type="application/json">(.*?)</script>', re.S)
HEADPHONE_KEYS = {"post_url", "csrf_token", "trials", "intervals", "max_plays", "gap_s", "gain_db"}
#: Headers a server may set differently per response without telling files apart.
PER_RESPONSE = {"Date"}


def json_scripts(response) -> dict:
    return {name: json.loads(raw) for name, raw in _JSON_SCRIPT.findall(response.content.decode())}


def post_json(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def start(client, exp) -> Participant:
    """A new participant (the study link in a fresh browser: the same browser would resume)."""
    r = Client().post(reverse("participant:landing", args=[exp.public_token]))
    assert r.status_code == 302
    return Participant.objects.get(token=r.url.split("/")[2])


def with_config(open_experiment, **config):
    exp = open_experiment(n_excerpts=1, seconds=1.0)
    exp.config = rules.validate_config({**exp.config, **config})
    exp.save(update_fields=["config"])
    return exp


HEADPHONES = {"headphone_check": {"enabled": True, "trials_per_test": 6}}


def at_screening(client, exp, gain_db: float = 0.0) -> Participant:
    p = sessions.give_consent(participant=start(client, exp), agreed=True)
    p = sessions.set_level(participant=p, gain_db=gain_db)
    assert p.stage == "screening"
    return p


def fetch_all(client, data, skip=()) -> None:
    """Fetch every interval of every trial of the page's JSON, but (trial, position) in ``skip``."""
    for i, t in enumerate(data["trials"]):
        for j, url in enumerate(t["urls"]):
            if (i, j) not in skip:
                assert client.get(url).status_code == 200


def correct_answers(p: Participant) -> list[dict]:
    p.refresh_from_db()
    return [{"test": t["test"], "trial": i + 1, "chosen": t["target"]} for i, t in enumerate(p.screening["trials"])]


# ----------------------------------------------------------------------------- A: the check's secret


@pytest.mark.django_db
def test_screening_page_and_its_sounds_name_no_answer(client, open_experiment):
    exp = with_config(open_experiment, **HEADPHONES)
    p = at_screening(client, exp)
    page = client.get(reverse("participant:screening", args=[p.token]))
    data = json_scripts(page)["headphone-data"]
    # The page gets URLs, the number of intervals and plays, the gap and the gain: nothing else.
    assert set(data) == HEADPHONE_KEYS
    assert data["intervals"] == 3 and len(data["trials"]) == 12
    assert all(set(t) == {"test", "urls"} and len(t["urls"]) == 3 for t in data["trials"])
    p.refresh_from_db()
    stored = p.screening["trials"]
    urls = [u for t in data["trials"] for u in t["urls"]]
    # Each URL ends in the interval's random key, distinct from every other; no target,
    # position or seed can be read from it.
    assert [u.rsplit("/", 1)[1] for u in urls] == [k for t in stored for k in t["audio"]]
    assert len(set(urls)) == 36 and all(len(u.rsplit("/", 1)[1]) >= 20 for u in urls)
    html = page.content.decode()
    for word in ("target", "seed", 'antiphase":', "fetched_at"):
        assert word not in html
    assert not any(str(t["seed"]) in html for t in stored)
    answers = [client.get(u) for u in urls]
    first = answers[0]
    body = first.content
    assert first.status_code == 200 and first["Content-Type"] == "audio/wav" and body[:4] == b"RIFF"
    assert first["Cache-Control"] == "private, no-store" and int(first["Content-Length"]) == len(body)
    for r in answers:
        for forbidden in ("ETag", "Last-Modified", "Content-Disposition"):
            assert forbidden not in r
        # Every interval of every trial: the same headers, byte length and WAV header.
        assert {k: v for k, v in r.headers.items() if k not in PER_RESPONSE} == {
            k: v for k, v in first.headers.items() if k not in PER_RESPONSE
        }
        assert len(r.content) == len(body) and r.content[:44] == body[:44]
    assert body[36:40] == b"data"  # a 44-byte header: no PEAK chunk naming the soft interval
    # The three intervals of a trial are the trial's own sounds: the target differs from the others.
    trial = stored[0]
    sounds = [np.frombuffer(r.content[44:], "<i2").reshape(-1, 2).astype(float) for r in answers[:3]]
    for position, x in enumerate(sounds, start=1):
        assert np.allclose(x / 32767, headphone.interval(trial, position), atol=2 / 32767)
    # Byte ranges answer as for the stimuli.
    part = client.get(urls[0], HTTP_RANGE="bytes=10-19")
    assert (
        part.status_code == 206 and part.content == body[10:20] and part["Content-Range"] == f"bytes 10-19/{len(body)}"
    )
    assert client.get(urls[0], HTTP_RANGE=f"bytes={len(body)}-").status_code == 416
    # Another participant's token with this key, or a made-up key, is nothing.
    other = at_screening(client, exp)
    key = urls[0].rsplit("/", 1)[1]
    assert client.get(reverse("participant:screening_audio", args=[other.token, key])).status_code == 404
    assert client.get(reverse("participant:screening_audio", args=[p.token, "x" * 22])).status_code == 404


@pytest.mark.django_db
def test_answers_to_sounds_never_fetched_do_not_count(client, open_experiment):
    exp = with_config(open_experiment, **HEADPHONES)
    results = {}
    for case, skip in {
        "nothing fetched": None,
        "two antiphase trials short of an interval": {(0, 2), (1, 0)},
        "everything fetched": set(),
    }.items():
        p = at_screening(client, exp)
        url = reverse("participant:screening", args=[p.token])
        data = json_scripts(client.get(url))["headphone-data"]
        trials = screening.headphone_trials(participant=p)
        assert [t["test"] for t in trials[:2]] == ["antiphase", "antiphase"]
        if skip is not None:
            fetch_all(client, data, skip)
        # Every answer right, and "plays" claimed: only the server's record of fetches counts.
        answers = [{**a, "plays": 1} for a in correct_answers(p)]
        r = post_json(client, url, {"answers": answers})
        assert r.status_code == 200
        p.refresh_from_db()
        results[case] = (p.stage, p.screening["scores"], p.screening["not_delivered"])
        assert [a["delivered"] for a in p.screening["answers"]] == [
            skip is not None and not any(i == t for t, _ in skip) for i in range(12)
        ]
    assert results["nothing fetched"] == ("screened_out", {"antiphase": 0.0, "huggins": 0.0}, list(range(1, 13)))
    assert results["two antiphase trials short of an interval"] == (
        "screened_out",
        {"antiphase": pytest.approx(4 / 6), "huggins": 1.0},
        [1, 2],
    )
    assert results["everything fetched"] == ("training", {"antiphase": 1.0, "huggins": 1.0}, [])


@pytest.mark.django_db
def test_each_fetch_is_recorded(client, open_experiment):
    exp = with_config(open_experiment, **HEADPHONES)
    p = at_screening(client, exp)
    data = json_scripts(client.get(reverse("participant:screening", args=[p.token])))["headphone-data"]
    first = data["trials"][0]["urls"]
    client.get(first[1])
    client.get(first[1])
    p.refresh_from_db()
    trial = p.screening["trials"][0]
    assert trial["fetches"] == 2 and trial["fetched_at"][0] is None and trial["fetched_at"][2] is None
    assert trial["fetched_at"][1] is not None
    assert all(t["fetches"] == 0 for t in p.screening["trials"][1:])


def test_antiphase_intervals_match_woods_et_al():
    """Woods et al. 2017: one tone 6 dB down, one in antiphase, at 200 Hz."""
    trial = {"test": "antiphase", "target": 2, "antiphase": 3, "seed": 1}
    (l1, r1), (l2, r2), (l3, r3) = (headphone.interval(trial, i, 48000, 1.0).T for i in (1, 2, 3))
    assert len(l1) == 48000
    assert np.allclose(l1, r1) and np.allclose(l2, r2) and np.allclose(l3, -r3)
    assert 20 * np.log10(np.sqrt(np.mean(l2**2)) / np.sqrt(np.mean(l1**2))) == pytest.approx(-6.0, abs=0.01)
    assert np.sqrt(np.mean(l3**2)) == pytest.approx(np.sqrt(np.mean(l1**2)), rel=1e-6)
    assert np.argmax(np.abs(np.fft.rfft(l1))) == 200  # 1 Hz bins: a 200 Hz tone
    made = headphone.new_trial("antiphase", random.Random(3))
    assert made["antiphase"] in {1, 2, 3} - {made["target"]}


def test_huggins_intervals_match_milne_et_al():
    """Milne et al. 2021: white noise, the band 600 Hz +/- 6 % inverted in one ear of the target only."""
    rate = 48000
    trial = {"test": "huggins", "target": 1, "seed": 5}
    left, right = headphone.interval(trial, 1, rate, 1.0).T
    mid = slice(480, rate - 480)  # leave out the 10 ms ramps
    freqs, cross = scipy.signal.csd(left[mid], right[mid], fs=rate, nperseg=4096)
    _, auto_l = scipy.signal.welch(left[mid], fs=rate, nperseg=4096)
    _, auto_r = scipy.signal.welch(right[mid], fs=rate, nperseg=4096)
    band = (freqs > 600 * 0.94 + 12) & (freqs < 600 * 1.06 - 12)
    outside = (freqs > 100) & ((freqs < 600 * 0.94 - 60) | (freqs > 600 * 1.06 + 60))
    assert band.sum() >= 3 and np.all(np.abs(np.angle(cross[band])) > 0.95 * np.pi)
    assert np.all(np.abs(np.angle(cross[outside])) < 0.05 * np.pi)
    # One power spectrum in both ears (in the band, on average over its bins: Welch's
    # segments leak across the band's edges).
    assert np.allclose(auto_l[outside], auto_r[outside], rtol=0.01, atol=0)
    assert np.mean(auto_r[band]) / np.mean(auto_l[band]) == pytest.approx(1.0, abs=0.03)
    assert np.sqrt(np.mean(right**2)) == pytest.approx(np.sqrt(np.mean(left**2)), rel=0.02)
    controls = [headphone.interval(trial, i, rate, 1.0) for i in (2, 3)]
    assert all(np.array_equal(x[:, 0], x[:, 1]) for x in controls)  # control intervals are diotic
    assert not np.allclose(controls[0], controls[1])  # and each is its own noise
    assert np.array_equal(headphone.interval(trial, 2, rate, 1.0), controls[0])  # made again from the seed


# ----------------------------------------------------------------------------- B: level, then the check


@pytest.mark.django_db
@pytest.mark.parametrize(
    "config, after_consent, after_level",
    [
        ({**HEADPHONES}, "level", "headphones"),
        ({**HEADPHONES, "level_setting": False}, "headphones", None),
        ({}, "level", "trial"),
    ],
)
def test_stage_order_is_consent_level_screening(client, open_experiment, config, after_consent, after_level):
    exp = with_config(open_experiment, **config)
    p = start(client, exp)
    r = client.post(reverse("participant:consent", args=[p.token]), {"agree": "yes"})
    assert r.status_code == 302 and f"/{after_consent}/" in r.url
    if after_consent == "level":
        # The check cannot be reached before the level is set.
        assert client.get(reverse("participant:screening", args=[p.token])).url == r.url
        r = client.post(r.url, {"gain_db": "-6"})
        assert r.status_code == 302 and f"/{after_level}/" in r.url


@pytest.mark.django_db
def test_level_gain_is_stored_and_carried_to_every_later_page(client, open_experiment):
    exp = with_config(open_experiment, **HEADPHONES)
    p = sessions.give_consent(participant=start(client, exp), agreed=True)
    url = reverse("participant:level", args=[p.token])
    page = client.get(url)
    html = page.content.decode()
    level = json_scripts(page)["level-data"]
    assert level == {
        "url": reverse("participant:reference", args=[p.token, 1]),
        "min_db": -40.0,
        "max_db": 12.0,
        "gain_db": 0.0,
    }
    assert re.search(
        r'<label for="gain-db">Volume</label>\s*<input type="range" id="gain-db" name="gain_db" '
        r'min="-40.0" max="12.0"',
        html,
    )
    for bad, reason in [
        ("13", "between -40 and +12"),
        ("-41", "between -40 and +12"),
        ("nan", "between"),
        ("loud", "expected a number"),
        ("", "expected a number"),
    ]:
        r = client.post(url, {"gain_db": bad})
        assert r.status_code == 400 and reason in r.content.decode(), bad
        p.refresh_from_db()
        assert p.stage == "level" and p.level == {}
    assert client.post(url, {"gain_db": "-7.5"}).status_code == 302
    p.refresh_from_db()
    assert p.level["gain_db"] == -7.5 and p.stage == "screening"
    screening = json_scripts(client.get(reverse("participant:screening", args=[p.token])))["headphone-data"]
    assert screening["gain_db"] == -7.5
    fetch_all(client, screening)
    post_json(client, reverse("participant:screening", args=[p.token]), {"answers": correct_answers(p)})
    p.refresh_from_db()
    assert p.stage == "training"
    trial = json_scripts(client.get(reverse("participant:trial", args=[p.token, 1])))["trial-data"]
    assert trial["gain_db"] == -7.5


# ----------------------------------------------------------------------------- C: Prolific exits

PROLIFIC = "https://app.prolific.com/submissions/complete"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "config, code, url",
    [
        ({"completion_url": f"{PROLIFIC}?cc=C0MPL3TE", "screenout_code": "SCR33N"}, "SCR33N", f"{PROLIFIC}?cc=SCR33N"),
        (
            {"completion_url": PROLIFIC, "screenout_url": "https://example.org/out?x=1", "screenout_code": "S1"},
            "S1",
            "https://example.org/out?x=1&cc=S1",
        ),
        ({"completion_url": PROLIFIC}, "", ""),
    ],
)
def test_screened_out_participants_are_sent_to_the_screenout_exit(client, open_experiment, config, code, url):
    exp = with_config(open_experiment, **HEADPHONES, completion_code="C0MPL3TE", **config)
    p = at_screening(client, exp)
    check = reverse("participant:screening", args=[p.token])
    client.get(check)  # nothing fetched: every answer counts as wrong
    r = post_json(client, check, {"answers": correct_answers(p)})
    p.refresh_from_db()
    assert p.stage == "screened_out" and (p.exit_code, p.exit_url) == (code, url)
    done = client.get(r.json()["next_url"])
    html = done.content.decode()
    assert "cannot continue" in html and "C0MPL3TE" not in html
    if url:
        assert f'<meta http-equiv="refresh" content="5;url={url.replace("&", "&amp;")}">' in html
        assert f'id="screenout-code">{code}<' in html
    else:
        assert "http-equiv" not in html and "screenout-code" not in html


@pytest.mark.django_db
def test_completers_are_sent_to_the_completion_exit(client, participant_at_trials):
    from tests.webmushra.test_builder import rate_all

    exp, p = participant_at_trials(
        n_excerpts=1,
        seconds=1.0,
        config={
            "training": False,
            "questionnaire": [],
            "completion_code": "C0MPL3TE",
            "screenout_code": "SCR33N",
            "completion_url": f"{PROLIFIC}?cc=OLD",
        },
    )
    p = rate_all(p)
    assert p.stage == "completed"
    assert (p.exit_code, p.exit_url) == ("C0MPL3TE", f"{PROLIFIC}?cc=C0MPL3TE")
    html = client.get(reverse("participant:done", args=[p.token])).content.decode()
    assert f'content="5;url={PROLIFIC}?cc=C0MPL3TE"' in html and 'id="completion-code">C0MPL3TE<' in html
    # A participant who finished before exits were recorded gets them recorded on the done page.
    Participant.objects.filter(pk=p.pk).update(exit_code="", exit_url="")
    assert f"{PROLIFIC}?cc=C0MPL3TE" in client.get(reverse("participant:done", args=[p.token])).content.decode()
    p.refresh_from_db()
    assert (p.exit_code, p.exit_url) == ("C0MPL3TE", f"{PROLIFIC}?cc=C0MPL3TE")


def test_exit_settings_are_validated():
    ok = rules.validate_config(
        {"completion_code": "A" * 64, "screenout_code": "B-1_x", "screenout_url": "https://app.prolific.com/x"}
    )
    assert ok["screenout_code"] == "B-1_x"
    for config, reason in [
        ({"completion_code": "A" * 65}, "completion_code: at most 64"),
        ({"screenout_code": "B" * 65}, "screenout_code: at most 64"),
        ({"screenout_code": "two words"}, "screenout_code"),
        ({"completion_code": "SAME", "screenout_code": "SAME"}, "must differ"),
        ({"screenout_url": "ftp://example.org/x"}, "screenout_url: must be a web address"),
        ({"screenout_url": "https://"}, "screenout_url: must be a web address"),
        ({"completion_url": "https://a b.org/"}, "completion_url: must be a web address"),
        ({"screenout_url": "https://example.org/" + "x" * 400}, "screenout_url: at most 400"),
    ]:
        with pytest.raises(ServiceError, match=reason):
            rules.validate_config(config)


@pytest.mark.django_db
def test_settings_page_edits_the_exit_settings(client, researcher):
    from webmushra.services import experiments

    exp = experiments.create_experiment(owner=researcher, title="Exits")
    client.force_login(researcher)
    url = reverse("researcher:settings", args=[exp.pk])
    page = client.get(url).content.decode()
    assert 'name="screenout_url"' in page and 'name="screenout_code"' in page and 'maxlength="64"' in page
    data = {
        "title": "Exits",
        "estimated_minutes": 10,
        "completion_code": "C" * 64,
        "screenout_url": "https://app.prolific.com/submissions/complete",
        "screenout_code": "SCR33N",
        "headphone_pass_threshold": 0.8,
        "headphone_trials": 6,
        "reference_threshold": 90,
        "reference_max_fraction": 0.15,
        "anchor_threshold": 90,
        "anchor_max_fraction": 0.15,
    }
    assert client.post(url, data).status_code == 302
    exp.refresh_from_db()
    assert exp.config["completion_code"] == "C" * 64 and exp.config["screenout_code"] == "SCR33N"
    assert exp.config["screenout_url"] == "https://app.prolific.com/submissions/complete"
    client.post(url, {**data, "screenout_code": "C" * 64})  # the same code as the completion code
    exp.refresh_from_db()
    assert exp.config["screenout_code"] == "SCR33N"
