"""The API as a client generated from its OpenAPI description sees it: typed answers (status,
metrics, ratings, participants), binary uploads, the participant list, and the documentation
pages served from the site's own static files."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from rest_framework.test import APIClient

from webmushra.api import serializers as s
from webmushra.services import accounts, quality, sessions

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(researcher):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {accounts.api_token_for(user=researcher)}")
    return client


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    with django_db_blocker.unblock():
        return Client().get("/api/schema/?format=json").json()


def component(schema: dict, ref: dict) -> dict:
    """The component a ``$ref`` (or an ``allOf`` of one, as a described field is written) names."""
    ref = ref["allOf"][0] if "allOf" in ref else ref
    return schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]


def answer_schema(schema: dict, path: str, method: str, code: str, media: str = "application/json") -> dict:
    return component(schema, schema["paths"][path][method]["responses"][code]["content"][media]["schema"])


def fields_of(serializer) -> set[str]:
    return set(serializer().fields)


@pytest.mark.parametrize(
    "path, method, code, serializer",
    [
        ("/api/experiments/{id}/status/", "get", "200", s.StatusSerializer),
        ("/api/experiments/{id}/render/", "post", "202", s.RenderStatusSerializer),
        ("/api/experiments/{id}/render/cancel/", "post", "200", s.RenderStatusSerializer),
        ("/api/experiments/{id}/jobs/{job_id}/retry/", "post", "202", s.RenderStatusSerializer),
        ("/api/experiments/{id}/metrics/", "get", "200", s.MetricsSerializer),
        ("/api/experiments/{id}/ratings/", "get", "200", s.RatingsSerializer),
        ("/api/experiments/{id}/participants/", "get", "200", s.ParticipantListSerializer),
    ],
)
def test_answers_are_typed_in_the_schema(schema, path, method, code, serializer):
    body = answer_schema(schema, path, method, code)
    assert body["type"] == "object" and set(body["properties"]) == fields_of(serializer)


def test_nested_answer_types_name_every_field_and_enum(schema):
    status = answer_schema(schema, "/api/experiments/{id}/status/", "get", "200")
    job = component(schema, status["properties"]["jobs"]["items"])
    assert component(schema, job["properties"]["status"])["enum"] == [
        "pending",
        "queued",
        "running",
        "done",
        "failed",
        "canceled",
    ]
    assert component(schema, status["properties"]["status"])["enum"] == [
        "draft",
        "rendering",
        "ready",
        "open",
        "closed",
    ]
    participants = component(schema, status["properties"]["participants"])
    assert participants["properties"]["median_duration_s"] == {
        "type": "number",
        "format": "double",
        "nullable": True,
        "description": "Of the completed sessions.",
    }
    metrics = answer_schema(schema, "/api/experiments/{id}/metrics/", "get", "200")
    row = component(schema, metrics["properties"]["metrics"]["items"])
    assert row["properties"]["value"]["type"] == "number" and row["required"] == [
        "condition",
        "item",
        "metric",
        "value",
    ]
    csv = schema["paths"]["/api/experiments/{id}/ratings/"]["get"]["responses"]["200"]["content"]["text/csv"]
    assert csv["schema"]["type"] == "string"


@pytest.mark.parametrize(
    "path, files",
    [
        ("/api/experiments/{id}/checkpoints/", {"file", "config"}),
        ("/api/experiments/{id}/excerpts/", {"dry", "reference"}),
    ],
)
def test_uploads_are_binary_in_the_schema(schema, path, files):
    body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    props = component(schema, body)["properties"]
    assert {name for name, p in props.items() if p.get("format") == "binary"} == files
    ir = schema["paths"]["/api/experiments/{id}/conditions/{condition_id}/ir/"]["put"]["requestBody"]["content"]
    assert component(schema, ir["multipart/form-data"]["schema"])["properties"]["file"]["format"] == "binary"
    download = schema["paths"]["/api/experiments/{id}/report/{report_id}/download/"]["get"]["responses"]["200"]
    assert download["content"]["application/zip"]["schema"] == {"type": "string", "format": "binary"}


def test_answers_match_their_types(api, rendered_experiment):
    exp = rendered_experiment(n_excerpts=1, seconds=1.0)
    status = api.get(f"/api/experiments/{exp.pk}/status/").json()
    assert set(status) == fields_of(s.StatusSerializer)
    assert set(status["counts"]) == fields_of(s.RenderCountsSerializer)
    assert set(status["jobs"][0]) == fields_of(s.RenderJobStatusSerializer)
    assert set(status["participants"]) == fields_of(s.ParticipantSummarySerializer)
    metrics = api.get(f"/api/experiments/{exp.pk}/metrics/").json()["metrics"]
    assert metrics and set(metrics[0]) == fields_of(s.MetricRowSerializer)


def test_participant_list(api, participant_at_trials):
    from tests.webmushra.test_builder import rate_all

    exp, done = participant_at_trials(n_excerpts=2, seconds=1.0, config={"training": False})
    done = sessions.submit_questionnaire(participant=rate_all(done), answers={})
    quality.exclude_participant(participant=done, reason="pressed at random")
    waiting = sessions.start_participant(experiment=exp, prolific_pid="5f0c0ffee0123456789abcde")
    pilot = sessions.start_participant(experiment=exp, pilot=True)
    r = api.get(f"/api/experiments/{exp.pk}/participants/")
    assert r.status_code == 200
    body = r.json()
    assert body["experiment"] == exp.pk
    rows = {row["pk"]: row for row in body["participants"]}
    assert set(rows) == {done.pk, waiting.pk, pilot.pk}
    for row in rows.values():
        assert set(row) == fields_of(s.ParticipantRowSerializer)
    first = rows[done.pk]
    trials = exp.trials.count()
    assert first["id"] == f"P{done.pk}" and first["stage"] == "completed" and first["pilot"] is False
    assert first["trials_answered"] == first["trials_planned"] == trials == 2
    assert first["completed_at"] and first["duration_s"] >= 0
    assert first["excluded"] is True and first["exclusion_reason"] == "pressed at random" and first["excluded_at"]
    assert (rows[waiting.pk]["stage"], rows[waiting.pk]["trials_answered"], rows[waiting.pk]["excluded"]) == (
        "consent",
        0,
        False,
    )
    assert rows[waiting.pk]["completed_at"] is None and rows[pilot.pk]["pilot"] is True
    # The same participant ids as the ratings; nothing a person could be known by.
    ratings = api.get(f"/api/experiments/{exp.pk}/ratings/").json()["ratings"]
    assert {row["participant"] for row in ratings} == {f"P{done.pk}"}
    assert "5f0c0ffee" not in r.content.decode() and "prolific" not in r.content.decode().lower()


def test_participant_list_of_an_experiment_not_yours_is_404(api, rendered_experiment, django_user_model):
    exp = rendered_experiment(n_excerpts=1, seconds=1.0)
    other = django_user_model.objects.create_user("someone", password="someone-password-1")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {accounts.api_token_for(user=other)}")
    assert client.get(f"/api/experiments/{exp.pk}/participants/").status_code == 404
    assert api.get(f"/api/experiments/{exp.pk}/participants/").json() == {"experiment": exp.pk, "participants": []}


@pytest.mark.parametrize(
    "page, asset", [("/api/docs/", "swagger-ui-bundle.js"), ("/api/redoc/", "redoc.standalone.js")]
)
def test_api_docs_come_from_the_sites_own_static_files(client, page, asset):
    html = client.get(page).content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(src.endswith(asset) for src in sources), sources
    assert all(src.startswith("/") for src in sources), sources
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost|testserver)", html), "a page asset from another origin"
    for src in sources:
        if src.startswith("/static/"):
            r = client.get(src)
            assert r.status_code == 200, src
            assert b"".join(r.streaming_content if r.streaming else [r.content])
