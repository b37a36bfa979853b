"""A whole participant session in Chromium (Firefox and WebKit too) against a live server, with worker-rendered stimuli.

Landing (with Prolific ids) -> consent -> level -> headphone check -> training trial ->
three test trials (with a reload in the middle) -> questionnaire -> completion code, on a
desktop and on a phone viewport. Checks blinding (ITU-R BS.1534-3 §5.3: no condition name
reaches the participant outside training), the trial rules, resuming, and that the ratings
stored are those set.

The first test renders its stimuli with a real Celery worker; later tests in this module
reuse those rendered files (the database is flushed between tests, the audio is not), so
the module renders once. A test run on its own renders for itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import RequestFactory
from django.urls import reverse

from tests.browser.conftest import keys_for, screenshot
from tests.conftest import PLAYER_JS, wait_for, wait_js
from tests.integration.test_pipeline import render_with_worker
from webmushra import rules
from webmushra.models import (
    Condition,
    ConditionKind,
    Excerpt,
    Experiment,
    Participant,
    Rating,
    Stimulus,
    TrialResponse,
    training_names,
)
from webmushra.services import experiments, sessions
from webmushra.views.participant import trial_data

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

N_EXCERPTS = 3
SECONDS = 2.0
CHECKPOINTS = ("ht1_lstm32.json",)
COMPLETION_CODE = "C0MPL3TE"
PROLIFIC = {"PROLIFIC_PID": "5f0c1e2d3b4a59687f6e5d4c", "STUDY_ID": "study-77", "SESSION_ID": "sess-9001"}
QUESTIONNAIRE = [
    {"name": "age", "label": "Your age", "type": "number", "required": True},
    {
        "name": "experience",
        "label": "Years playing guitar",
        "type": "select",
        "options": ["none", "1-5", "more than 5"],
        "required": True,
    },
    {"name": "comment", "label": "Comments", "type": "textarea", "required": False},
]
ANSWERS = {"age": "34", "experience": "1-5", "comment": "The third one hissed."}
# Distinct scores for each trial, one at 100 (the rules ask for one signal at 100).
SCORES = [[100, 85, 12, 47], [23, 100, 64, 8], [71, 36, 100, 55]]
TRAINING_SCORES = [100, 60, 30, 90]
# Signals rated with the keyboard on the desktop (by position); the rest with the slider.
KEYBOARD_SIGNALS = {1, 3}

#: The gain the desktop participant sets on the level page (dB).
GAIN_DB = -6
#: The level page's state, read as the player's is (a mushra:inspect event on its form).
LEVEL_JS = (
    "(() => { const d = {state: () => null};"
    " document.querySelector('form.level')"
    ".dispatchEvent(new CustomEvent('mushra:inspect', {detail: d})); return d; })()"
)

#: Audio written by the worker in the first test: (excerpt position, condition kind) -> row.
_RENDERED: dict[tuple[int, str], dict[str, Any]] = {}


@pytest.fixture(scope="session", autouse=True)
def _orm_beside_playwright() -> Iterator[None]:
    # Playwright's sync API keeps an event loop in this thread for the whole session (the
    # browser fixture); the ORM calls made between browser steps are plain synchronous code.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


def _config(trials_per_test: int) -> dict[str, Any]:
    return rules.validate_config(
        {
            "headphone_check": {
                "enabled": True,
                "tests": ["antiphase", "huggins"],
                "trials_per_test": trials_per_test,
                "pass_threshold": 0.5,
            },
            "questionnaire": QUESTIONNAIRE,
            "completion_code": COMPLETION_CODE,
            # Every rule on, as by default, with shorter minimums to keep the run short: each
            # signal is heard for 0.5 s, so four signals take the 1.5 s a trial page needs.
            "rules": {**rules.RULE_DEFAULTS, "min_play_seconds": 0.5, "min_trial_seconds": 1.5},
        }
    )


def _remember_render(exp: Experiment) -> None:
    for s in Stimulus.objects.filter(experiment=exp).select_related("excerpt", "condition"):
        _RENDERED[(s.excerpt.position, s.condition.kind)] = {
            "audio": (Path(settings.MEDIA_ROOT) / s.file).read_bytes(),
            **{
                f: getattr(s, f)
                for f in (
                    "sample_rate",
                    "frames",
                    "channels",
                    "size",
                    "loudness_lufs",
                    "gain_db",
                    "peak_dbfs",
                    "metrics",
                )
            },
        }


def _reuse_render(exp: Experiment) -> None:
    """Store the worker's earlier output as this experiment's stimuli (same layout as the worker)."""
    for excerpt in Excerpt.objects.filter(experiment=exp):
        for condition in Condition.objects.filter(experiment=exp):
            row = dict(_RENDERED[(excerpt.position, condition.kind)])
            rel = f"stimuli/e{exp.pk}/x{excerpt.pk}_c{condition.pk}.wav"
            path = Path(settings.MEDIA_ROOT) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(row.pop("audio"))
            Stimulus.objects.create(experiment=exp, excerpt=excerpt, condition=condition, file=rel, **row)
    Experiment.objects.filter(pk=exp.pk).update(status=Experiment.Status.READY)


def open_rendered_experiment(build_experiment, start_worker, trials_per_test: int) -> Experiment:
    exp = build_experiment(
        n_excerpts=N_EXCERPTS, seconds=SECONDS, checkpoints=CHECKPOINTS, config=_config(trials_per_test)
    )
    kinds = set(exp.conditions.values_list("kind", flat=True))
    if _RENDERED and {k for _, k in _RENDERED} == kinds:
        _reuse_render(exp)
    else:
        render_with_worker(exp, start_worker)
        _remember_render(exp)
    return experiments.open_experiment(experiment=exp)


# ----------------------------------------------------------------------------- recording


class Traffic:
    """Every request URL and response (URL, status, headers) of a browser context."""

    def __init__(self, context: Any) -> None:
        self.requests: list[str] = []
        self.responses: list[tuple[str, int, dict[str, str]]] = []
        context.on("request", lambda r: self.requests.append(r.url))
        context.on("response", lambda r: self.responses.append((r.url, r.status, dict(r.headers))))

    def for_urls(self, urls: set[str]) -> list[tuple[str, int, dict[str, str]]]:
        return [r for r in self.responses if urlsplit(r[0]).path in urls]


def forbidden_names(exp: Experiment) -> list[str]:
    """Everything that would tell a participant which condition a signal is."""
    names = {kind.value for kind in ConditionKind}
    for c in exp.conditions.select_related("checkpoint"):
        names.add(c.label)
        if c.checkpoint is not None:
            names.update({c.checkpoint.name, Path(c.checkpoint.name).stem, Path(c.checkpoint.file.name).name})
    for s in Stimulus.objects.filter(experiment=exp):
        names.add(Path(s.file).name)
    return sorted(names)


def assert_blind(text: str, names: list[str], where: str) -> None:
    found = [n for n in names if re.search(rf"(?<![A-Za-z0-9]){re.escape(n)}(?![A-Za-z0-9])", text)]
    assert not found, f"{where} names {found}"


# ----------------------------------------------------------------------------- pages


def state(page: Any) -> dict[str, Any]:
    return page.evaluate(f"{PLAYER_JS}.state()")


def slider(page: Any, n: int) -> Any:
    return page.get_by_label(f"Signal {n} rating", exact=True)


def json_script(page: Any, element_id: str) -> dict[str, Any]:
    return page.evaluate(f"JSON.parse(document.getElementById('{element_id}').textContent)")


def play(page: Any, n: int, phone: bool) -> None:
    if phone:
        page.get_by_role("button", name=f"Play signal {n} (key {n})").tap()
    else:
        page.keyboard.press(str(n))


def heard(key: str, data: dict[str, Any]) -> str:
    """A JavaScript test: the player has counted the rules' minimum listening time for ``key``."""
    return f"({PLAYER_JS}.state()?.listen_s?.['{key}'] || 0) >= {data['rules']['min_play_seconds']}"


def rate_trial(page: Any, scores: list[int], phone: bool) -> dict[str, int]:
    """Play, listen to and rate every signal, checking that the rules hold at each step; return key -> score."""
    wait_js(page, f"{PLAYER_JS}.state()?.ready")
    data = json_script(page, "trial-data")
    keys = [s["key"] for s in data["signals"]]
    assert len(keys) == len(scores)
    n = len(keys)
    submit = page.locator(".wm-submit")
    assert [slider(page, i).is_disabled() for i in range(1, n + 1)] == [True] * n
    assert submit.is_disabled()
    for i, score in enumerate(scores, start=1):
        play(page, i, phone)
        # Only the playing signal's slider moves; unplayed ones stay shut.
        assert [slider(page, j).is_disabled() for j in range(1, n + 1)] == [j != i for j in range(1, n + 1)]
        wait_js(page, heard(keys[i - 1], data), timeout=10_000)
        if not phone and i in KEYBOARD_SIGNALS:
            page.evaluate("document.activeElement && document.activeElement.blur()")
            for key in keys_for(score):
                page.keyboard.press(key)
        else:
            slider(page, i).fill(str(score))
        if i < n:
            assert submit.is_disabled(), "a trial with an unrated signal could be submitted"
            assert f"Rate signal{'s' if n - i > 1 else ''} " in page.locator(".wm-missing").inner_text()
    wanted = dict(zip(keys, scores))
    assert state(page)["ratings"] == wanted
    assert all(state(page)["played"][k] for k in keys)
    assert submit.is_enabled()
    return wanted


def submit_and_wait(page: Any) -> None:
    before = page.url
    page.locator(".wm-submit").click()
    page.wait_for_url(lambda url: url != before)


def wait_state(page: Any, ready: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """Poll the player's state until ``ready`` holds for it; return that state."""

    def poll() -> dict[str, Any] | None:
        st = state(page)
        return st if ready(st) else None

    return wait_for(poll, timeout=15, interval=0.05, what=what)


def check_playhead_kept_on_switch(page: Any) -> None:
    """BS.1534-3 §5.3: switching signals continues at the same playhead."""
    page.locator(".wm-stop").click()  # back to the start, so the loop does not wrap meanwhile
    start = state(page)["context_time"]
    page.keyboard.press("r")
    # 0.35 s of the reference itself: until the stopped signal's fade-out has ended, the playhead
    # still reads that signal's position.
    before = wait_state(
        page,
        lambda st: st["playing"] and st["position_s"] > 0.35 and st["context_time"] - start > 0.35,
        "the reference to pass 0.35 s",
    )
    page.keyboard.press("1")
    after = state(page)
    assert (before["current"], after["current"], after["playing"]) == ("ref", "a", True)
    elapsed = after["context_time"] - before["context_time"]
    assert before["position_s"] > 0.3
    assert after["position_s"] - before["position_s"] == pytest.approx(elapsed, abs=0.08)
    page.keyboard.press("2")
    later = wait_state(
        page, lambda st: st["context_time"] - after["context_time"] > 0.2, "0.2 s of audio after the switch"
    )
    elapsed = later["context_time"] - after["context_time"]
    assert later["current"] == "b" and later["position_s"] - after["position_s"] == pytest.approx(elapsed, abs=0.08)
    page.locator(".wm-stop").click()


def check_stimulus_responses(traffic: Traffic, data: dict[str, Any], names: list[str]) -> None:
    urls = {data["reference"]["url"]} | {s["url"] for s in data["signals"]}
    got = [r for r in traffic.for_urls(urls) if r[1] == 200]
    assert {urlsplit(u).path for u, _, _ in got} == urls
    lengths = {h.get("content-length") for _, _, h in got}
    assert len(lengths) == 1 and None not in lengths, f"stimuli of one trial differ in length: {lengths}"
    # Cached by the browser for the session, alike for every stimulus of the trial.
    assert len({h.get("cache-control") for _, _, h in got}) == 1
    for url, _, headers in got:
        assert "etag" not in headers and "last-modified" not in headers, (url, headers)
        assert re.fullmatch(r"private, max-age=\d+", headers.get("cache-control", "")), headers
        assert_blind(json.dumps(headers), names, f"the headers of {url}")


def run_session(
    browser: Any, live_server: Any, exp: Experiment, name: str, phone: bool, wrong_first_screening_answer: bool
) -> Participant:
    """Take one participant through the whole test in a fresh browser context."""
    if phone:
        context = browser.new_context(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
        )
    else:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
    traffic = Traffic(context)
    page = context.new_page()
    page.set_default_timeout(15_000)
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    names = forbidden_names(exp)
    shots = iter(range(1, 100))

    def snap(step: str) -> None:
        screenshot(page, f"session-{name}-{next(shots):02d}-{step}")
        if phone:
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, f"{step} is wider than the phone"

    def blind(step: str) -> None:
        assert_blind(page.content(), names, f"the {step} page")

    try:
        query = "&".join(f"{k}={v}" for k, v in PROLIFIC.items())
        page.goto(f"{live_server.url}{reverse('participant:landing', args=[exp.public_token])}?{query}")
        snap("landing")
        blind("landing")
        page.locator("#start").click()
        page.wait_for_url("**/consent/")
        participant = Participant.objects.get(experiment=exp, prolific_pid=PROLIFIC["PROLIFIC_PID"])
        participants_before = Participant.objects.filter(experiment=exp).count()
        assert (participant.prolific_study_id, participant.prolific_session_id) == (
            PROLIFIC["STUDY_ID"],
            PROLIFIC["SESSION_ID"],
        )
        snap("consent")
        blind("consent")
        page.locator("#agree").click()

        # Level first: play the calibration signal and set the volume with the keyboard.
        page.wait_for_url("**/level/")
        snap("level")
        blind("level")
        page.get_by_role("button", name="Play the example").click()
        wait_js(page, f"{LEVEL_JS}.state().playing")
        volume = page.get_by_label("Volume", exact=True)
        volume.focus()
        for _ in range(-GAIN_DB):
            page.keyboard.press("ArrowLeft")
        assert page.locator("#gain-db-value").inner_text() == f"\u2212{-GAIN_DB} dB"
        assert page.evaluate(f"{LEVEL_JS}.state()")["gain_db"] == pytest.approx(GAIN_DB, abs=1e-3)
        page.locator("#level-done").click()

        # Headphone check: answer with the targets the server keeps (the page never has them).
        page.wait_for_url("**/headphones/")
        participant.refresh_from_db()
        assert participant.level["gain_db"] == GAIN_DB
        hp = json_script(page, "headphone-data")
        assert hp["gain_db"] == GAIN_DB and all(set(t) == {"test", "urls"} for t in hp["trials"])
        targets = [t["target"] for t in participant.screening["trials"]]
        blind("headphone check")
        snap("headphones")
        page.get_by_role("button", name="Begin").click()
        for i, target in enumerate(targets):
            answer = target % 3 + 1 if (i == 0 and wrong_first_screening_answer) else target
            page.get_by_role("button", name="Play the three sounds").click()
            page.get_by_role("button", name=str(answer), exact=True).click()
            if i == 0:
                snap("headphone-question")
            page.get_by_role("button", name="Next").click()
        page.wait_for_url("**/trial/1/")
        participant.refresh_from_db()
        assert participant.screening["passed"] is True
        assert participant.screening["not_delivered"] == []
        assert [a["correct"] for a in participant.screening["answers"]] == [
            not (i == 0 and wrong_first_screening_answer) for i in range(len(targets))
        ]

        # Training: the conditions are named.
        wait_js(page, f"{PLAYER_JS}.state()?.ready")
        # The player plays everything through the gain set on the level page.
        assert json_script(page, "trial-data")["gain_db"] == GAIN_DB
        assert state(page)["gain_db"] == pytest.approx(GAIN_DB, abs=1e-3)
        participant.refresh_from_db()
        plan = participant.plan
        assert [e["training"] for e in plan] == [True] + [False] * N_EXCERPTS
        data = json_script(page, "trial-data")
        labels = {c.pk: c.label for c in exp.conditions.all()}
        shown = training_names(exp.conditions.all())
        keys = sessions.signal_keys(plan[0])
        # Training names the conditions by their display names, never by their labels.
        assert page.locator(".wm-label").all_inner_texts() == [shown[keys[s["key"]]] for s in data["signals"]]
        assert page.locator(".wm-training-note").is_visible()
        blind("training")
        rate_trial(page, TRAINING_SCORES, phone)
        snap("training")
        training_urls = {data["reference"]["url"], *(s["url"] for s in data["signals"])}
        assert training_urls <= {urlsplit(u).path for u in traffic.requests}, "training audio was not fetched"
        submit_and_wait(page)
        test_urls: set[str] = set()

        sent: dict[tuple[int, int], int] = {}
        for t in range(1, N_EXCERPTS + 1):
            number = t + 1
            page.wait_for_url(f"**/trial/{number}/")
            if t == N_EXCERPTS:
                # Reload mid-test (trials 1 and 2 saved): the same trial comes back, nothing doubles.
                assert TrialResponse.objects.filter(participant=participant).count() == 3
                assert Rating.objects.filter(participant=participant).count() == 2 * len(labels)
                page.reload()
                assert urlsplit(page.url).path.endswith(f"/trial/{number}/")
                page.goto(live_server.url + reverse("participant:trial", args=[participant.token, number - 1]))
                assert urlsplit(page.url).path.endswith(f"/trial/{number}/")
                page.goto(live_server.url + reverse("participant:resume", args=[participant.token]))
                assert urlsplit(page.url).path.endswith(f"/trial/{number}/")
                assert TrialResponse.objects.filter(participant=participant).count() == 3
                assert Rating.objects.filter(participant=participant).count() == 2 * len(labels)
            wait_js(page, f"{PLAYER_JS}.state()?.ready")
            data = json_script(page, "trial-data")
            test_urls |= {data["reference"]["url"], *(s["url"] for s in data["signals"])}
            assert data["trial"] == {
                "number": t,
                "total": N_EXCERPTS,
                "training": False,
                "title": f"Trial {t} of {N_EXCERPTS}",
            }
            assert page.locator(".wm-label").count() == 0
            blind(f"trial {t}")
            if t == 1 and not phone:
                # The server refuses a trial with a signal unrated, whatever the page does.
                partial = {s["key"]: 50 for s in data["signals"][:-1]}
                reply = page.evaluate(
                    """async ([url, key, csrf, ratings]) => {
                         const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json',
                           'X-CSRFToken': csrf}, body: JSON.stringify({idempotency_key: key, ratings})});
                         return [r.status, await r.json()]; }""",
                    [data["save_url"], data["idempotency_key"], data["csrf_token"], partial],
                )
                assert reply[0] == 400 and "not rated" in reply[1]["error"]
                assert not TrialResponse.objects.filter(participant=participant, trial_id=plan[t]["trial"]).exists()
            ratings = rate_trial(page, SCORES[t - 1], phone)
            if t == 1 and not phone:
                check_playhead_kept_on_switch(page)
                assert state(page)["ratings"] == ratings
            blind(f"rated trial {t}")
            snap(f"trial-{t}")
            keys = sessions.signal_keys(plan[t])
            for key, score in ratings.items():
                sent[(plan[t]["trial"], keys[key])] = score
            submit_and_wait(page)
            check_stimulus_responses(traffic, data, names)

        page.wait_for_url("**/questionnaire/")
        # Training and the test trials fetched their audio through URLs they never share.
        assert test_urls <= {urlsplit(u).path for u in traffic.requests}, "test audio was not fetched"
        assert training_urls.isdisjoint(test_urls), f"training and test share {sorted(training_urls & test_urls)}"
        blind("questionnaire")
        # Sent without a required answer (as a browser without form validation would): the page
        # comes back with every other answer kept, and the missing one marked.
        page.locator("#q-experience").select_option(ANSWERS["experience"])
        page.locator("#q-comment").fill(ANSWERS["comment"])
        page.evaluate("document.querySelector('form.form').noValidate = true")
        page.locator("#finish").click()
        page.wait_for_selector("p.error")
        assert "Your age" in page.locator("p.error").inner_text()
        assert page.locator("#q-experience").input_value() == ANSWERS["experience"]
        assert page.locator("#q-comment").input_value() == ANSWERS["comment"]
        assert page.locator("#q-age").get_attribute("aria-invalid") == "true"
        page.locator("#q-age").fill(ANSWERS["age"])
        snap("questionnaire")
        page.locator("#finish").click()

        page.wait_for_url("**/done/")
        blind("done")
        snap("done")
        participant.refresh_from_db()
        assert participant.stage == Participant.Stage.COMPLETED
        assert page.locator("#completion-code").inner_text() == participant.completion_code == COMPLETION_CODE
        assert participant.questionnaire == ANSWERS
        # The study link reopened in this browser goes back to this participant's end page.
        page.goto(f"{live_server.url}{reverse('participant:landing', args=[exp.public_token])}")
        assert urlsplit(page.url).path == reverse("participant:done", args=[participant.token])
        assert Participant.objects.filter(experiment=exp).count() == participants_before

        stored = {(r.trial_id, r.condition_id): r.score for r in Rating.objects.filter(participant=participant)}
        assert stored == sent
        assert TrialResponse.objects.filter(participant=participant).count() == len(plan)
        for response in TrialResponse.objects.filter(participant=participant):
            tel = response.telemetry
            assert all(v["plays"] >= 1 for v in tel["signals"].values())
            assert tel["audio"]["context_sample_rate"] == exp.sample_rate
            # The log the server refereed the trial by: every signal played, each slider moved.
            assert {e["key"] for e in tel["events"] if e["type"] == "play"} >= set(tel["signals"])
            assert {e["key"] for e in tel["events"] if e["type"] == "move"} == set(tel["signals"])

        for url in traffic.requests:
            assert_blind(url, names, f"the request {url}")
        for url, _, headers in traffic.responses:
            assert_blind(json.dumps(headers), names, f"the headers of {url}")
        assert js_errors == []
        return participant
    finally:
        context.close()


# ----------------------------------------------------------------------------- tests


def test_whole_session_on_a_desktop(browser, live_server, build_experiment, start_worker) -> None:
    exp = open_rendered_experiment(build_experiment, start_worker, trials_per_test=2)
    participant = run_session(browser, live_server, exp, "desktop", phone=False, wrong_first_screening_answer=True)
    # One of two antiphase answers wrong: 0.5 passes a threshold of 0.5.
    assert participant.screening["scores"] == {"antiphase": 0.5, "huggins": 1.0}


def test_whole_session_on_a_phone(browser, live_server, build_experiment, start_worker) -> None:
    exp = open_rendered_experiment(build_experiment, start_worker, trials_per_test=1)
    participant = run_session(browser, live_server, exp, "phone", phone=True, wrong_first_screening_answer=False)
    assert participant.screening["scores"] == {"antiphase": 1.0, "huggins": 1.0}


def rate_by_keyboard(page: Any, scores: list[int]) -> dict[str, int]:
    """Play each signal with its digit key and rate it with the keys, checking the rules."""
    page.wait_for(f"{PLAYER_JS}.state()?.ready && {PLAYER_JS}.state().context_state === 'running'")
    settle = getattr(page, "settle_audio", None)  # WebKit here: see WebKitPage.settle_audio
    if settle is not None:
        settle(f"{PLAYER_JS}.context")
    data = json_script(page, "trial-data")
    keys = [s["key"] for s in data["signals"]]
    n = len(keys)
    disabled = (
        f"[...Array({n}).keys()].map(i => document.querySelector(`[aria-label='Signal ${{i + 1}} rating']`).disabled)"
    )
    assert page.evaluate(disabled) == [True] * n
    for i, score in enumerate(scores, start=1):
        page.keyboard.press(str(i))
        assert page.evaluate(disabled) == [j != i for j in range(1, n + 1)]
        page.wait_for(heard(keys[i - 1], data), timeout=10)
        for key in keys_for(score):
            page.keyboard.press(key)
        assert page.evaluate("document.querySelector('.wm-submit').disabled") is (i < n)
    wanted = dict(zip(keys, scores))
    assert state(page)["ratings"] == wanted
    return wanted


#: What the page itself saw of its requests (Resource Timing): URL and body bytes.
RESOURCES = "performance.getEntriesByType('resource').map(e => [e.name, e.encodedBodySize])"


def run_keyboard_session(page: Any, engine: str, live_server: Any, exp: Experiment) -> Participant:
    """The whole test in Firefox or WebKit: key presses as WebDriver input; clicks as
    WebDriver clicks in WebKit, the element's click() in Firefox (see FirefoxPage._click)."""
    names = forbidden_names(exp)
    shots = iter(range(1, 100))
    requested: set[str] = set()
    stimulus_paths: set[str] = set()

    def step(name: str, blind_too: bool = True) -> None:
        screenshot(page, f"session-{engine}-{next(shots):02d}-{name}")
        requested.update(url for url, _ in page.evaluate(RESOURCES))
        if blind_too:
            assert_blind(page.content(), names, f"the {name} page in {engine}")

    query = "&".join(f"{k}={v}" for k, v in PROLIFIC.items())
    page.goto(f"{live_server.url}{reverse('participant:landing', args=[exp.public_token])}?{query}")
    step("landing")
    page.click("#start")
    page.wait_for_path("/consent/")
    participant = Participant.objects.get(experiment=exp, prolific_pid=PROLIFIC["PROLIFIC_PID"])
    step("consent")
    page.click("#agree")
    page.wait_for_path("/level/")
    step("level")
    page.click("#level-done")
    page.wait_for_path("/headphones/")
    participant.refresh_from_db()
    targets = [t["target"] for t in participant.screening["trials"]]
    step("headphones")
    page.click_button("Begin")
    for target in targets:
        page.wait_for("!document.querySelector('.hp-play').disabled")  # the trial's sounds are loaded
        page.click_button("Play the three sounds")
        page.wait_for(
            f"[...document.querySelectorAll('button')].some(b => b.textContent.trim() === '{target}'"
            " && !b.disabled && b.getClientRects().length > 0)"
        )
        page.click_button(str(target))
        page.click_button("Next")

    page.wait_for_path("/trial/1/")
    participant.refresh_from_db()
    plan = participant.plan
    assert participant.screening["passed"] is True
    rate_by_keyboard(page, TRAINING_SCORES)
    step("training", blind_too=False)
    page.click(".wm-submit")
    sent: dict[tuple[int, int], int] = {}
    for t in range(1, N_EXCERPTS + 1):
        page.wait_for_path(f"/trial/{t + 1}/")
        if t == N_EXCERPTS:  # a reload comes back to the same trial, nothing doubled
            page.goto(page.url)
            assert page.wait_for_path(f"/trial/{t + 1}/")
            assert TrialResponse.objects.filter(participant=participant).count() == N_EXCERPTS
        ratings = rate_by_keyboard(page, SCORES[t - 1])
        step(f"trial-{t}")
        data = json_script(page, "trial-data")
        # Every stimulus of the trial was fetched, all with the same number of bytes.
        urls = {data["reference"]["url"]} | {x["url"] for x in data["signals"]}
        sizes = {urlsplit(u).path: n for u, n in page.evaluate(RESOURCES) if urlsplit(u).path in urls}
        assert set(sizes) == urls and len(set(sizes.values())) == 1 and min(sizes.values()) > 44
        stimulus_paths.update(urls)
        keys = sessions.signal_keys(plan[t])
        sent.update({(plan[t]["trial"], keys[k]): v for k, v in ratings.items()})
        page.click(".wm-submit")
        page.wait_for(f"!location.pathname.endsWith('/trial/{t + 1}/')")

    page.wait_for_path("/questionnaire/")
    page.type_into("#q-age", ANSWERS["age"])
    page.evaluate(
        "v => { const s = document.querySelector('#q-experience'); s.value = v;"
        " s.dispatchEvent(new Event('change', {bubbles: true})); }",
        ANSWERS["experience"],
    )
    page.type_into("#q-comment", ANSWERS["comment"])
    step("questionnaire")
    page.click("#finish")
    page.wait_for_path("/done/")
    step("done")
    participant.refresh_from_db()
    assert participant.stage == Participant.Stage.COMPLETED and participant.questionnaire == ANSWERS
    assert page.evaluate("document.querySelector('#completion-code').textContent.trim()") == COMPLETION_CODE
    stored = {(r.trial_id, r.condition_id): r.score for r in Rating.objects.filter(participant=participant)}
    assert stored == sent
    agent = "Firefox/" if engine == "firefox" else "AppleWebKit/"
    for response in TrialResponse.objects.filter(participant=participant):
        tel = response.telemetry
        assert agent in tel["user_agent"] and "Chrome/" not in tel["user_agent"]
        assert tel["audio"]["context_sample_rate"] == exp.sample_rate
        assert all(v["plays"] >= 1 for v in tel["signals"].values())
    for url in requested:
        assert_blind(url, names, f"the request {url}")
    for url, _, headers in getattr(page, "responses", list)():  # Firefox: headers too
        assert_blind(json.dumps(headers), names, f"the headers of {url}")
        if urlsplit(url).path in stimulus_paths:
            assert "etag" not in headers and "last-modified" not in headers, (url, headers)
    assert page.js_errors == []
    return participant


@pytest.mark.parametrize("engine", ["firefox", "webkit"])
def test_whole_session_in_firefox_and_webkit(engine, request, live_server, build_experiment, start_worker) -> None:
    exp = open_rendered_experiment(build_experiment, start_worker, trials_per_test=1)
    page = request.getfixturevalue(engine).new_page()
    try:
        participant = run_keyboard_session(page, engine, live_server, exp)
    finally:
        page.close()
    assert participant.screening["scores"] == {"antiphase": 1.0, "huggins": 1.0}


def test_level_page_does_not_reuse_a_trial_signal_url(client, build_experiment, start_worker) -> None:
    exp = open_rendered_experiment(build_experiment, start_worker, trials_per_test=1)
    client.post(reverse("participant:landing", args=[exp.public_token]))
    participant = Participant.objects.get(experiment=exp)
    sessions.give_consent(participant=participant, agreed=True)
    Participant.objects.filter(pk=participant.pk).update(stage=Participant.Stage.LEVEL)
    level = client.get(reverse("participant:level", args=[participant.token]))
    src = level.context["level_data"]["url"]
    sessions.set_level(participant=participant, gain_db=0.0)
    participant.refresh_from_db()
    request = RequestFactory().get("/")
    urls = {
        s["url"]
        for index, entry in enumerate(participant.plan)
        if not entry["training"]
        for s in trial_data(request, participant, index)["signals"]
    }
    assert src is not None and src not in urls
