"""No input gets a 5xx: generated malformed requests to the participant pages, the researcher
forms and every API route (read from the OpenAPI schema) are answered below 500, and a 4xx
answer says what was wrong.

Property-based (hypothesis): wrong types, huge, deep and odd-unicode strings, missing fields,
NaN and huge numbers, wrong content types, odd Range headers. Each property runs a bounded,
derandomised number of examples, so the module stays well under a minute and never flakes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.paths import fixture_path
from tests.trials import save_body
from webmushra import rules
from webmushra.models import Participant, StimulusToken
from webmushra.services import accounts, sessions
from webmushra.services import screening as headphone_check

pytestmark = pytest.mark.django_db

#: Bounded and reproducible: a fixed number of examples from a fixed seed, no example database.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ----------------------------------------------------------------------------- malformed values

#: Strings that have broken parsers elsewhere: NUL, a lone surrogate, numbers Python cannot
#: hold as floats or ints, a long digit string, path tricks, markup, wide characters.
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "NaN",
    "-Infinity",
    "1e309",
    "-1e309",
    "9" * 5000,
    "0x10",
    "1_000",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "ｆｕｌｌ",
    "🎸" * 300,
    "x" * 70_000,
    "=cmd|' /C calc'!A0",
]
odd_text = st.sampled_from(ODD_STRINGS) | st.text(max_size=30) | st.text(st.characters(codec=None), max_size=12)
odd_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, -(2**63) - 1, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), odd_numbers, odd_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FORM = "application/x-www-form-urlencoded"
#: A form field's value as a browser could send it (always text).
form_values = odd_text | odd_numbers.map(str)


def urlencoded(data: dict[str, str]) -> str:
    """A form body or query string as any client may send it: every value percent-encoded from
    its UTF-8 bytes, a lone surrogate as the invalid bytes it encodes to."""
    return "&".join(
        f"{quote_from_bytes(k.encode('utf-8', 'surrogatepass'))}={quote_from_bytes(v.encode('utf-8', 'surrogatepass'))}"
        for k, v in data.items()
    )


def dumps(value: Any) -> str:
    """JSON as a careless client writes it: NaN and Infinity allowed, lone surrogates escaped."""
    return json.dumps(value, allow_nan=True)


#: Bodies that are not what any endpoint expects, sent with a content type of their own.
raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"{", b"[" * 20_000 + b"]" * 20_000, b"\xff\xfe\x00", b"null", b'"\\ud800"', b"1" * 5000]),
    json_values.map(lambda v: dumps(v).encode()),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz",
        "multipart/form-data",
        "application/xml",
    ]
)


def check(response, what: str) -> None:
    """Below 500, and a 4xx says why: JSON answers carry a non-empty ``error``, others a body
    (a 416 names the size in Content-Range instead, a 405 the methods allowed in Allow)."""
    status = response.status_code
    body = b"" if getattr(response, "streaming", False) else response.content
    assert status < 500, f"{what}: HTTP {status}: {body[:500]!r}"
    if 400 <= status < 500:
        if status == 416:
            assert response["Content-Range"].startswith("bytes */"), what
            return
        if status == 405:
            assert response["Allow"], what
            return
        assert body.strip(), f"{what}: HTTP {status} with an empty body"
        if response.get("Content-Type", "").startswith("application/json"):
            error = json.loads(body).get("error")
            assert isinstance(error, str) and error.strip(), f"{what}: HTTP {status} without an error: {body[:300]!r}"
    if getattr(response, "streaming", False):
        b"".join(response.streaming_content)


# ----------------------------------------------------------------------------- participant pages

QUESTIONNAIRE = [
    {"name": "age", "label": "Age", "type": "number", "required": True},
    {"name": "gear", "label": "Headphones", "type": "select", "options": ["open", "closed"], "required": True},
    {"name": "comment", "label": "Comment", "type": "textarea"},
]


@pytest.fixture
def participants(client, open_experiment):
    """An open experiment with a participant at each step: consent, level, screening, trials
    (first trial's audio fetched and time gone by) and questionnaire."""
    exp = open_experiment(
        n_excerpts=1,
        seconds=1.0,
        config={
            "training": False,
            "headphone_check": {"enabled": True, "tests": ["antiphase"], "trials_per_test": 1},
            "questionnaire": QUESTIONNAIRE,
        },
    )
    at: dict[str, Participant] = {"consent": sessions.start_participant(experiment=exp)}
    p = sessions.start_participant(experiment=exp)
    at["level"] = sessions.give_consent(participant=p, agreed=True)
    p = sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True)
    at["screening"] = sessions.set_level(participant=p, gain_db=0.0)
    assert at["screening"].stage == Participant.Stage.SCREENING
    for stage in ("trials", "questionnaire"):
        p = sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True)
        p = sessions.set_level(participant=p, gain_db=0.0)
        Participant.objects.filter(pk=p.pk).update(stage=getattr(Participant.Stage, stage.upper()))
        at[stage] = Participant.objects.get(pk=p.pk)
    return exp, at


def test_participant_form_posts_never_fail(client, participants):
    exp, at = participants
    urls = {
        "landing": reverse("participant:landing", args=[exp.public_token]),
        "consent": reverse("participant:consent", args=[at["consent"].token]),
        "level": reverse("participant:level", args=[at["level"].token]),
        "questionnaire": reverse("participant:questionnaire", args=[at["questionnaire"].token]),
    }
    names = ["agree", "gain_db", "age", "gear", "comment", "PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "pilot"]

    @FUZZ
    @given(
        page=st.sampled_from(sorted(urls)),
        data=st.dictionaries(st.sampled_from(names) | st.text(max_size=5), form_values, max_size=5),
        query=st.dictionaries(st.sampled_from(names), form_values, max_size=2),
    )
    def post(page: str, data: dict[str, str], query: dict[str, str]) -> None:
        url = urls[page] + "?" + urlencoded({k: v[:200] for k, v in query.items()})
        response = client.post(url, urlencoded(data), content_type=FORM)
        check(response, f"POST {page} {data!r:.300} {query!r:.300}")

    post()


def test_login_never_fails(client, request):
    """The sign-in form with its limiter on (per address and per account name)."""
    django_settings = request.getfixturevalue("settings")
    django_settings.RATELIMIT_ENABLED = True
    # A fast hasher: each attempt hashes the password it was sent, which is not what is tested.
    django_settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

    @FUZZ
    @given(data=st.dictionaries(st.sampled_from(["username", "password", "next"]), form_values, max_size=3))
    def post(data: dict[str, str]) -> None:
        check(client.post("/accounts/login/", urlencoded(data), content_type=FORM), f"login {data!r:.200}")

    post()


def test_level_names_gain_db(client, participants):
    """A gain that is not a number, or not a finite one, is a 400 naming the field."""
    _, at = participants
    url = reverse("participant:level", args=[at["level"].token])
    for value in ("", "abc", "nan", "inf", "-1e309", "9" * 5000, "\x00"):
        response = client.post(url, {"gain_db": value})
        assert response.status_code == 400 and "gain_db" in response.content.decode(), value


def test_json_saves_never_fail(client, participants):
    """Trial and headphone-check saves: a good save with one part replaced, removed or
    garbled, and bodies that are no JSON object at all, with any content type."""
    _, at = participants
    trial_url = reverse("participant:trial", args=[at["trials"].token, 1])
    screening_url = reverse("participant:screening", args=[at["screening"].token])
    good = save_body(at["trials"], 0, client=client)
    keys = list(good["ratings"])
    headphone_check.headphone_trials(participant=at["screening"])

    mutations = st.one_of(
        st.tuples(st.sampled_from(["idempotency_key", "ratings", "telemetry", "answers", "comment"]), json_values),
        st.tuples(st.just("ratings"), st.dictionaries(st.sampled_from(keys) | st.text(max_size=3), json_values)),
        st.tuples(
            st.just("telemetry"),
            st.fixed_dictionaries({}, optional={k: json_values for k in ("signals", "reference", "events")}),
        ),
    )

    @FUZZ
    @given(
        target=st.sampled_from(["trial", "screening"]),
        change=mutations,
        drop=st.sets(st.sampled_from(["idempotency_key", "ratings", "telemetry"]), max_size=2),
    )
    def save(target: str, change: tuple[str, Any], drop: set[str]) -> None:
        body = {k: v for k, v in good.items() if k not in drop} | {change[0]: change[1]}
        url = trial_url if target == "trial" else screening_url
        check(client.post(url, dumps(body), content_type="application/json"), f"{target} {body!r:.300}")

    @FUZZ
    @given(target=st.sampled_from([trial_url, screening_url]), body=raw_bodies, content_type=content_types)
    def raw(target: str, body: bytes, content_type: str) -> None:
        check(client.post(target, body, content_type=content_type), f"{target} {content_type} {body[:80]!r}")

    save()
    raw()


def test_json_save_errors_name_the_field(client, participants):
    """A malformed part of a trial save is a 400 whose message starts with that part's name."""
    _, at = participants
    url = reverse("participant:trial", args=[at["trials"].token, 1])
    good = save_body(at["trials"], 0, client=client)
    key = next(iter(good["ratings"]))
    for field, value in (
        ("idempotency_key", 12),
        ("idempotency_key", "\ud800" * 10),
        ("ratings", []),
        ("ratings", {**good["ratings"], key: math.nan}),
        ("ratings", {**good["ratings"], key: 10**400}),
        ("comment", ["not", "text"]),
    ):
        response = client.post(url, dumps({**good, field: value}), content_type="application/json")
        assert response.status_code == 400 and response.json()["error"].startswith(field), (field, response.content)


def test_media_with_odd_range_headers_never_fails(client, participants):
    _, at = participants
    p = at["trials"]
    stimulus = StimulusToken.objects.filter(participant=p).first()
    assert stimulus is not None
    key = headphone_check.headphone_trials(participant=at["screening"])[0]["audio"][0]
    urls = [
        reverse("participant:stimulus", args=[stimulus.token]),
        reverse("participant:reference", args=[p.token, 1]),
        reverse("participant:screening_audio", args=[at["screening"].token, key]),
    ]
    numbers = st.integers(min_value=0, max_value=10**30).map(str) | st.just("")
    ranges = st.one_of(
        st.builds(lambda a, b: f"bytes={a}-{b}", numbers, numbers),
        st.builds(lambda a, b, c: f"bytes={a}-{b},{c}-", numbers, numbers, numbers),
        st.sampled_from(["bytes=", "bytes=-", "bytes=--1", "bytes=1-2-3", "bytes= 0-1", "items=0-1", "bytes=٣-٤"]),
        odd_text,
    )

    @FUZZ
    @given(url=st.sampled_from(urls), header=ranges, method=st.sampled_from(["GET", "HEAD"]))
    def fetch(url: str, header: str, method: str) -> None:
        response = client.generic(method, url, HTTP_RANGE=header)
        check(response, f"{method} {url} Range: {header!r:.100}")
        assert response.status_code in (200, 206, 416), (header, response.status_code)

    fetch()


def test_participant_urls_with_odd_parts_never_fail(client, participants):
    exp, at = participants
    token = at["trials"].token

    @FUZZ
    @given(
        url=st.one_of(
            st.builds(lambda n: f"/p/{token}/trial/{n}/", st.integers(min_value=0, max_value=10**40)),
            st.builds(lambda n: f"/p/{token}/trial/{n}/reference", st.integers(min_value=0, max_value=10**40)),
            st.builds(
                lambda t: f"/s/{t}", st.text(st.characters(codec="utf-8", exclude_characters="/?#"), max_size=80)
            ),
            st.builds(
                lambda t: f"/t/{t}/", st.text(st.characters(codec="utf-8", exclude_characters="/?#"), max_size=80)
            ),
        ),
        method=st.sampled_from(["GET", "POST"]),
    )
    def visit(url: str, method: str) -> None:
        check(client.generic(method, url, b"{}", content_type="application/json"), f"{method} {url!r:.120}")

    visit()


# ----------------------------------------------------------------------------- researcher pages


@pytest.fixture
def researcher_world(client, researcher, build_experiment):
    exp = build_experiment(n_excerpts=1, seconds=1.0, training_excerpt=False)
    client.force_login(researcher)
    return exp


def _form_data(form) -> dict[str, str]:
    """A bound form's initial values as a browser sends them (a box ticked: "on"; unticked: absent)."""
    data = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if value is True:
            data[name] = "on"
        elif value not in (None, False):
            data[name] = str(value)
    return data


def test_researcher_form_posts_never_fail(client, researcher_world):
    """Each researcher form, sent as the page would with some of its fields replaced by junk."""
    from webmushra import forms

    exp = researcher_world
    pk = exp.pk
    condition = exp.conditions.first()
    checkpoint = exp.checkpoints.first()
    excerpt = exp.excerpts.first()
    participant = Participant.objects.create(experiment=exp)
    condition_form = {"checkpoint": str(checkpoint.pk), "label": "L", "knobs": "", "display_name": ""}
    #: page -> (URL, the form as the page sends it)
    pages = {
        "new": (reverse("researcher:experiment_new"), _form_data(forms.ExperimentForm())),
        "settings": (reverse("researcher:settings", args=[pk]), _form_data(forms.SettingsForm.for_experiment(exp))),
        "conditions": (reverse("researcher:conditions", args=[pk]), condition_form),
        "anchors": (reverse("researcher:anchors", args=[pk]), {"anchor35": "on"}),
        "display_name": (
            reverse("researcher:condition_display_name", args=[pk, condition.pk]),
            {"display_name": "A"},
        ),
        "training": (reverse("researcher:excerpt_training", args=[pk, excerpt.pk]), {"training": "on"}),
        "delete": (reverse("researcher:experiment_delete", args=[pk]), {"confirm_title": "no"}),
        "exclusion": (
            reverse("researcher:participant_exclusion", args=[pk, participant.pk]),
            {"action": "exclude", "reason": "r"},
        ),
        "excerpts": (reverse("researcher:excerpts", args=[pk]), {"name": "n"}),
        "checkpoints": (reverse("researcher:checkpoints", args=[pk]), {"name": "n", "sample_rate": "48000"}),
        "import": (reverse("researcher:import"), {"allow_partial": "on"}),
    }
    assert all(data for _, data in pages.values())

    @st.composite
    def sent(draw) -> tuple[str, dict[str, str]]:
        page = draw(st.sampled_from(sorted(pages)))
        base = pages[page][1]
        junk = draw(st.dictionaries(st.sampled_from(sorted(base)), form_values, min_size=1, max_size=3))
        dropped = draw(st.sets(st.sampled_from(sorted(base)), max_size=2))
        return page, {k: v for k, v in base.items() if k not in dropped} | junk

    @settings(FUZZ, max_examples=120)
    @given(form=sent())
    def post(form: tuple[str, dict[str, str]]) -> None:
        page, data = form
        response = client.post(pages[page][0], urlencoded(data), content_type=FORM)
        check(response, f"POST {page} {data!r:.300}")

    @FUZZ
    @given(
        page=st.sampled_from(["excerpts", "checkpoints", "import"]),
        files=st.dictionaries(
            st.sampled_from(["dry", "reference", "file", "config", "audio", "files"]),
            st.tuples(odd_text.map(lambda s: s[:100]), st.binary(max_size=256)),
            max_size=3,
        ),
    )
    def upload(page: str, files: dict[str, tuple[str, bytes]]) -> None:
        body = multipart(pages[page][1], files)
        check(client.post(pages[page][0], body, content_type=MULTIPART), f"upload {page} {files!r:.300}")

    post()
    upload()


BOUNDARY = "fuzz-boundary-7d1c"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> bytes:
    """A multipart body as any client may send it: the file names and values as their UTF-8
    bytes, a NUL or an unpaired surrogate included (Django's test client refuses to send those)."""

    def raw(text: str) -> bytes:
        return text.encode("utf-8", "surrogatepass").replace(b'"', b"%22").replace(b"\r", b"").replace(b"\n", b"")

    out = b""
    for name, value in fields.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="'.encode() + raw(name) + b'"\r\n\r\n'
        out += value.encode("utf-8", "surrogatepass") + b"\r\n"
    for name, (filename, data) in files.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="'.encode() + raw(name) + b'"; filename="'
        out += raw(filename) + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def test_researcher_urls_with_odd_parts_never_fail(client, researcher_world):
    pk = researcher_world.pk
    paths = [
        "experiments/{n}/",
        "experiments/{n}/progress.json",
        "experiments/{pk}/jobs/{n}/retry/",
        "experiments/{pk}/stimuli/{n}.wav",
        "experiments/{pk}/excerpts/{n}/dry.wav",
        "experiments/{pk}/participants/{n}/exclusion/",
        "experiments/{pk}/reports/{n}.zip",
        "experiments/{pk}/?section={q}",
        "experiments/{pk}/ratings.csv?pilot={q}",
    ]

    @FUZZ
    @given(
        path=st.sampled_from(paths),
        n=st.integers(min_value=0, max_value=10**40),
        q=odd_text.map(lambda s: s[:100]),
        method=st.sampled_from(["GET", "POST"]),
    )
    def visit(path: str, n: int, q: str, method: str) -> None:
        url = "/r/" + path.format(pk=pk, n=n, q=quote_from_bytes(q.encode("utf-8", "surrogatepass")))
        check(client.generic(method, url), f"{method} {url!r:.120}")

    visit()


# ----------------------------------------------------------------------------- API


def _api_routes(api: APIClient) -> list[tuple[str, str]]:
    """Every (method, path template) of the API's OpenAPI schema, from drf-spectacular."""
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]


def config_values() -> st.SearchStrategy[dict[str, Any]]:
    """An experiment's ``config`` shaped as the API documents it (every key ``rules.validate_config``
    and the analysis read, sub-objects with their own keys), each value well-formed or not."""
    from evaluation.settings import Settings

    def some_of(keys, values) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({}, optional={k: values for k in keys})

    question = some_of(
        ["name", "label", "type", "options", "required"], st.sampled_from(rules.QUESTION_TYPES) | scalars
    )
    tests = st.lists(st.sampled_from(rules.HEADPHONE_TESTS) | scalars, max_size=3) | scalars
    headphone = st.fixed_dictionaries({}, optional={"tests": tests}) | some_of(rules.HEADPHONE_DEFAULTS, scalars)
    analysis = some_of([f.name for f in Settings.__dataclass_fields__.values()], json_values)
    typed = {
        "questionnaire": st.lists(question, max_size=3),
        "headphone_check": headphone,
        "rules": some_of(rules.RULE_DEFAULTS, scalars),
        "quality": some_of(rules.QUALITY_DEFAULTS, scalars),
        "analysis": analysis,
    }
    top = [
        "trial_subset_size",
        "catch_trials",
        "repeat_trials",
        "trial_comments",
        "trial_instructions",
        "completion_url",
        "completion_code",
        "screenout_url",
        "screenout_code",
    ]
    return st.fixed_dictionaries(
        {},
        optional={k: v | json_values for k, v in typed.items()} | {k: scalars for k in [*top, *rules.FLOW_DEFAULTS]},
    )


def test_api_routes_never_fail(researcher, researcher_world):
    """Every route of the OpenAPI schema, with bodies of the documented fields (the config typed
    to its keys) holding malformed values; each write is followed by the reads that use what it
    stored, so a value accepted but unusable shows up too."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {accounts.api_token_for(user=researcher)}")
    routes = _api_routes(api)
    assert ("POST", "/api/experiments/{id}/conditions/") in routes, routes
    assert len(routes) >= 20, routes
    pk = researcher_world.pk
    checkpoint = researcher_world.checkpoints.first()
    fields = {
        "title": odd_text,
        "description": odd_text,
        "sample_rate": odd_numbers,
        "anchors": scalars,
        "instructions": odd_text,
        "estimated_minutes": odd_numbers,
        "loudness_target_lufs": odd_numbers,
        "checkpoint": st.just(checkpoint.pk) | odd_numbers,
        "label": odd_text,
        "display_name": odd_text,
        "knobs": st.dictionaries(st.sampled_from(checkpoint.knob_names or ["gain"]) | st.text(max_size=6), scalars),
        "config": config_values(),
    }
    plausible = {"title": "T", "checkpoint": checkpoint.pk, "label": "L"}
    bodies = (
        st.fixed_dictionaries({}, optional={k: v | json_values for k, v in fields.items()}).map(
            lambda changed: plausible | changed
        )
        | json_values
    )
    reads = [fill(t, pk, 0) for m, t in routes if m == "GET" and "{" in t and t.count("{") == 1]

    @FUZZ
    @given(route=st.sampled_from(routes), n=st.just(pk) | st.integers(min_value=0, max_value=10**30), body=bodies)
    def json_request(route: tuple[str, str], n: int, body: Any) -> None:
        method, template = route
        url = fill(template, pk, n)
        response = api.generic(method, url, dumps(body), content_type="application/json")
        check(response, f"{method} {url} {dumps(body)[:300]}")
        if method != "GET" and response.status_code < 300:
            for read in reads:
                check(api.get(read), f"GET {read} after {method} {url} {dumps(body)[:300]}")

    @settings(FUZZ, max_examples=100)
    @given(config=config_values(), method=st.sampled_from(["POST", "PATCH"]))
    def config_request(config: dict[str, Any], method: str) -> None:
        url = "/api/experiments/" if method == "POST" else f"/api/experiments/{pk}/"
        body = {"title": "T", "config": config}
        response = api.generic(method, url, dumps(body), content_type="application/json")
        check(response, f"{method} {url} {dumps(body)[:400]}")
        if response.status_code == 400:
            # The message starts with where the problem is: the config or one of its keys.
            where = re.match(r"[A-Za-z_]\w*", response.json()["error"])
            assert where and where[0] in ("config", *config), response.json()
        elif response.status_code < 300:
            for read in reads:
                check(api.get(read.replace(f"/{pk}/", f"/{response.json()['id']}/")), f"GET {read} after {body!r:.300}")

    @FUZZ
    @given(route=st.sampled_from(routes), body=raw_bodies, content_type=content_types)
    def raw_request(route: tuple[str, str], body: bytes, content_type: str) -> None:
        method, template = route
        url = fill(template, pk, pk)
        check(api.generic(method, url, body, content_type=content_type), f"{method} {url} {content_type} {body[:80]!r}")

    config_request()
    json_request()
    raw_request()


def fill(template: str, pk: int, n: int) -> str:
    """A schema path with the experiment's id first and ``n`` for any other id."""
    parts = template.split("/")
    first = next((i for i, p in enumerate(parts) if p.startswith("{")), -1)
    return "/".join(str(pk) if i == first else str(n) if p.startswith("{") else p for i, p in enumerate(parts))


def test_api_form_uploads_never_fail(researcher, researcher_world):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {accounts.api_token_for(user=researcher)}")
    pk = researcher_world.pk
    good = fixture_path("models", "coreaudioml", "ht1_lstm32.json").read_bytes()

    @FUZZ
    @given(
        where=st.sampled_from(["excerpts", "checkpoints", "conditions"]),
        data=st.dictionaries(
            st.sampled_from(["name", "sample_rate", "is_training", "checkpoint", "label", "knobs"]),
            form_values,
            max_size=4,
        ),
        files=st.dictionaries(
            st.sampled_from(["dry", "reference", "file", "config"]),
            st.tuples(odd_text.map(lambda s: s[:100]), st.binary(max_size=128) | st.just(good)),
            max_size=3,
        ),
    )
    def upload(where: str, data: dict[str, str], files: dict[str, tuple[str, bytes]]) -> None:
        url = f"/api/experiments/{pk}/{where}/"
        response = api.generic("POST", url, multipart(data, files), content_type=MULTIPART)
        check(response, f"POST {url} {data!r:.200} {files!r:.200}")

    upload()


def test_unstorable_json_is_found_with_its_path():
    """What the database cannot store is named by where it is; a deep document does not recurse."""
    from webmushra.inputs import json_problem

    assert json_problem({"a": [1, {"b": "ok"}], "n": 1e300, "t": "🎸"}) is None
    assert json_problem({"a": [1, {"b": float("nan")}]}) == "a[1].b: nan is not a number JSON allows"
    assert json_problem({"q": {".": "x\x00"}}, "config") == 'config.q["."]: text with a NUL character'
    assert json_problem({"k": "\ud800"}) == "k: text with an unpaired surrogate (not UTF-8)"
    assert json_problem({"\ud800": 1}) == "body: a key is text with an unpaired surrogate (not UTF-8)"
    deep: list = ["\x00"]
    for _ in range(100_000):
        deep = [deep]
    assert json_problem(deep, "d") == "d" + "[0]" * 66 + "[..." + ": text with a NUL character"
