"""Every participant URL as nobody, as its participant, as another participant (of the same
and of another experiment), as a researcher and as staff.

Participants have no accounts: a participant URL carries a random 128-bit token and that
token is the only credential. The expectations, precisely:

* a made-up token (participant, stimulus or public) is a 404 on every participant URL;
* tokens do not cross kinds: a participant token is no stimulus token, and so on;
* what a URL serves depends on the URL alone: cookies of another participant's session,
  or a researcher's or staff login, change nothing in the answer (no one gets more, and
  nothing of the visitor's own session leaks into it);
* a participant's pages name only their own stimulus tokens, never another's;
* a participant's URLs index their own plan: trial and reference numbers of one session
  never reach another session's rows, and a save through them is stored for them only;
* closing an experiment stops new sessions (410), new ratings (409) and the audio: stimulus
  tokens and open-reference URLs answer 410 once the experiment is closed or the session has
  ended; deleting a participant (a withdrawal) makes them 404.

The list of URLs comes from the resolver: a participant URL without an expectation here
fails the test.
"""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.trials import save_body
from webmushra.models import Participant, StimulusToken, TrialResponse, new_token
from webmushra.services import experiments, sessions

pytestmark = pytest.mark.django_db

#: name -> status of a GET by its own participant, while that participant is at trial 1.
EXPECTED = {
    "participant:landing": 200,
    "participant:resume": 302,
    "participant:consent": 302,
    "participant:screening": 302,
    "participant:screening_audio": 404,  # no headphone check in this experiment: no sounds to fetch
    "participant:level": 302,
    "participant:trial": 200,
    "participant:reference": 200,
    "participant:questionnaire": 302,
    "participant:done": 302,
    "participant:stimulus": 200,
}
_CSRF = re.compile(rb'("csrf_token": "|name="csrfmiddlewaretoken" value=")[^"]*')
_TOKEN = re.compile(r"/s/([A-Za-z0-9_-]+)")


def participant_endpoints() -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(patterns, namespace: str | None, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, p.namespace or namespace, prefix + str(p.pattern))
            elif isinstance(p, URLPattern) and namespace == "participant":
                found[f"participant:{p.name}"] = prefix + str(p.pattern)

    walk(get_resolver().url_patterns, None, "")
    return found


def test_every_participant_endpoint_has_an_expectation():
    names = set(participant_endpoints())
    assert names - set(EXPECTED) == set(), "participant URLs without an access expectation"
    assert set(EXPECTED) - names == set(), "expectations for participant URLs that no longer exist"


def urls_of(p: Participant) -> dict[str, str]:
    """Every participant URL of one participant (their first stimulus for the stimulus URL)."""
    tok = StimulusToken.objects.filter(participant=p).order_by("pk").first()
    return {
        "participant:landing": reverse("participant:landing", args=[p.experiment.public_token]),
        "participant:stimulus": reverse("participant:stimulus", args=[tok.token]),
        **{name: reverse(name, args=[p.token, 1]) for name in ("participant:trial", "participant:reference")},
        "participant:screening_audio": reverse("participant:screening_audio", args=[p.token, "no-such-sound"]),
        **{name: reverse(name, args=[p.token]) for name in EXPECTED if name not in OWN_ARGS},
    }


#: URLs that take more than the participant's token.
OWN_ARGS = (
    "participant:landing",
    "participant:stimulus",
    "participant:trial",
    "participant:reference",
    "participant:screening_audio",
)


def made_up_urls() -> dict[str, str]:
    return {
        "participant:landing": reverse("participant:landing", args=[new_token()]),
        "participant:stimulus": reverse("participant:stimulus", args=[new_token()]),
        **{name: reverse(name, args=[new_token(), 1]) for name in ("participant:trial", "participant:reference")},
        "participant:screening_audio": reverse("participant:screening_audio", args=[new_token(), new_token()]),
        **{name: reverse(name, args=[new_token()]) for name in EXPECTED if name not in OWN_ARGS},
    }


def answer(response) -> tuple[int, str, bytes]:
    """Status, redirect target and body, with the per-visitor CSRF token blanked out."""
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, response.get("Location", ""), _CSRF.sub(rb"\1", body)


def secrets_of(p: Participant) -> set[str]:
    p.refresh_from_db()
    own = {p.token, *StimulusToken.objects.filter(participant=p).values_list("token", flat=True)}
    return own | ({p.completion_code} if p.completion_code else set())


def session_client(p: Participant) -> Client:
    """A browser that went through its own participant's pages (and holds their cookies)."""
    c = Client()
    for url in urls_of(p).values():
        c.get(url)
    assert c.cookies.get("csrftoken"), "a participant page sets the CSRF cookie"
    return c


@pytest.fixture
def people(participant_at_trials, researcher, django_user_model):
    exp, a = participant_at_trials(n_excerpts=2, seconds=1.0, config={"training": False})
    b = sessions.set_level(
        participant=sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True),
        gain_db=0.0,
    )
    exp2, c = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    staff = django_user_model.objects.create_user(
        "staff", password="staff-password-33", is_staff=True, is_superuser=True
    )
    return {"exp": exp, "a": a, "b": b, "exp2": exp2, "c": c, "researcher": researcher, "staff": staff}


def test_participant_access_matrix(people):
    a, b, c = people["a"], people["b"], people["c"]
    failures: list[str] = []

    nobody = Client()
    for name, url in made_up_urls().items():
        status = nobody.get(url).status_code
        if status != 404:
            failures.append(f"made-up token  {name}: {status}")

    own = {name: answer(Client().get(url)) for name, url in urls_of(a).items()}
    for name, (status, _, _) in own.items():
        if status != EXPECTED[name]:
            failures.append(f"participant    {name}: {status} (expected {EXPECTED[name]})")

    researcher = Client()
    researcher.force_login(people["researcher"])
    staff = Client()
    staff.force_login(people["staff"])
    visitors = {
        "other (same)": (session_client(b), secrets_of(b)),
        "other (exp 2)": (session_client(c), secrets_of(c)),
        "researcher": (researcher, set()),
        "staff": (staff, set()),
    }
    for role, (visitor, theirs) in visitors.items():
        for name, url in urls_of(a).items():
            got = answer(visitor.get(url))
            if got != own[name]:
                failures.append(f"{role:14s} {name}: answered differently from the participant's own visit")
            leaked = [s for s in theirs if s.encode() in got[2] or s in got[1]]
            if leaked:
                failures.append(f"{role:14s} {name}: the visitor's own tokens leaked into the answer")
    assert not failures, "\n".join(failures)


def test_pages_name_only_their_own_stimulus_tokens(client, people):
    a, b, c = people["a"], people["b"], people["c"]
    page = client.get(reverse("participant:trial", args=[a.token, 1]))
    data = json.loads(
        re.search(r'<script id="trial-data" type="application/json">(.*?)</script>', page.content.decode(), re.S).group(
            1
        )
    )
    named = {_TOKEN.search(s["url"]).group(1) for s in data["signals"]}
    trial = sessions.next_plan_index(a)
    excerpt_tokens = set(
        StimulusToken.objects.filter(participant=a, stimulus__excerpt__trials__pk=a.plan[trial]["trial"]).values_list(
            "token", flat=True
        )
    )
    assert named == excerpt_tokens and len(named) == len(data["signals"]) >= 3
    others = set(StimulusToken.objects.filter(participant__in=[b, c]).values_list("token", flat=True))
    assert others and not named & others
    assert b.token not in page.content.decode() and c.token not in page.content.decode()


def test_tokens_do_not_cross_kinds(client, people):
    a = people["a"]
    stim = StimulusToken.objects.filter(participant=a).first().token
    public = people["exp"].public_token
    assert client.get(reverse("participant:stimulus", args=[a.token])).status_code == 404
    assert client.get(reverse("participant:stimulus", args=[public])).status_code == 404
    assert client.get(reverse("participant:resume", args=[stim])).status_code == 404
    assert client.get(reverse("participant:resume", args=[public])).status_code == 404
    assert client.get(reverse("participant:trial", args=[stim, 1])).status_code == 404
    assert client.get(reverse("participant:landing", args=[a.token])).status_code == 404


def test_a_save_is_stored_for_the_participant_of_the_url_only(people):
    """B's browser cannot redirect a save to B, nor reach A's rows through B's own URLs."""
    a, b = people["a"], people["b"]
    entry = a.plan[0]
    # Saves that meet the server's rules (tests/trials.py: audio fetched, time gone by, the log).
    body = json.dumps(save_body(a, 0))
    browser_b = session_client(b)
    # Through B's own URL every trial number is one of B's: trial 1 of B, whatever A's plan says.
    mine = browser_b.post(
        reverse("participant:trial", args=[b.token, 1]),
        data=json.dumps(save_body(b, 0, score_of=lambda kind: 100)),
        content_type="application/json",
    )
    assert mine.status_code == 200, mine.content
    assert not TrialResponse.objects.filter(participant=a).exists()
    assert list(TrialResponse.objects.filter(participant=b).values_list("trial_id", flat=True)) == [b.plan[0]["trial"]]
    # A's URL (the credential) from B's browser stores for A, never for B.
    theirs = browser_b.post(reverse("participant:trial", args=[a.token, 1]), data=body, content_type="application/json")
    assert theirs.status_code == 200 and theirs.json()["saved"] is True
    assert list(TrialResponse.objects.filter(participant=a).values_list("trial_id", flat=True)) == [entry["trial"]]
    assert TrialResponse.objects.filter(participant=b).count() == 1
    # Past the end of B's plan is a 404, not somebody else's trial.
    beyond = len(b.plan) + 1
    assert browser_b.get(reverse("participant:trial", args=[b.token, beyond])).status_code == 404
    assert browser_b.get(reverse("participant:reference", args=[b.token, beyond])).status_code == 404


def test_closing_stops_sessions_ratings_and_audio(client, people):
    a, exp = people["a"], people["exp"]
    stim = StimulusToken.objects.filter(participant=a).first().token
    assert client.get(reverse("participant:stimulus", args=[stim])).status_code == 200
    experiments.close_experiment(experiment=exp)
    assert client.post(reverse("participant:landing", args=[exp.public_token])).status_code == 410
    entry = a.plan[0]
    saved = client.post(
        reverse("participant:trial", args=[a.token, 1]),
        content_type="application/json",
        data=json.dumps({"idempotency_key": entry["key"], "ratings": {k: 100 for k in sessions.signal_keys(entry)}}),
    )
    assert saved.status_code == 409 and "closed" in saved.json()["error"]
    assert not TrialResponse.objects.filter(participant=a).exists()
    assert client.get(reverse("participant:stimulus", args=[stim])).status_code == 410
    assert client.get(reverse("participant:reference", args=[a.token, 1])).status_code == 410
    # Deleting a participant (a withdrawal) takes their tokens with them.
    a.delete()
    assert client.get(reverse("participant:stimulus", args=[stim])).status_code == 404
    assert client.get(reverse("participant:resume", args=[a.token])).status_code == 404


def test_tokens_are_unguessable_and_unique(people):
    tokens = [
        people["exp"].public_token,
        people["exp2"].public_token,
        *Participant.objects.values_list("token", flat=True),
        *StimulusToken.objects.values_list("token", flat=True),
    ]
    assert len(set(tokens)) == len(tokens)
    # 16 random bytes, URL-safe base64: 22 characters.
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", t) for t in tokens)
