"""Every researcher URL and API endpoint, as anonymous, participant, another researcher,
owner and staff. The list comes from the URL resolver: a new endpoint without an
expectation here fails the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.authtoken.models import Token

from webmushra.models import RenderJob, Report, Stimulus
from webmushra.services import accounts

pytestmark = pytest.mark.django_db

PUBLIC_API = {"api:schema", "api:docs", "api:redoc"}

#: name -> (method, status for the owner). Experiment-scoped unless listed in UNSCOPED.
EXPECTED = {
    "researcher:experiments": ("GET", 200),
    "researcher:experiment": ("GET", 200),
    "researcher:progress": ("GET", 200),
    "researcher:render": ("POST", 302),
    "researcher:share": ("POST", 302),
    "researcher:participant_withdraw": ("POST", 302),
    "researcher:purge": ("POST", 302),
    "researcher:render_cancel": ("POST", 302),
    "researcher:experiment_delete": ("POST", 302),
    "researcher:open": ("POST", 302),
    "researcher:close": ("POST", 302),
    "researcher:ratings_csv": ("GET", 200),
    "researcher:ratings_json": ("GET", 200),
    "researcher:experiment_new": ("GET", 200),
    "researcher:import": ("GET", 200),
    "researcher:settings": ("GET", 200),
    "researcher:experiment_blocks": ("POST", 409),
    "researcher:block_trapping": ("POST", 400),
    "researcher:excerpts": ("POST", 302),
    "researcher:excerpt_delete": ("POST", 302),
    "researcher:excerpt_training": ("POST", 302),
    "researcher:excerpt_audio": ("GET", 200),
    "researcher:checkpoints": ("POST", 302),
    "researcher:checkpoint_delete": ("POST", 302),
    "researcher:conditions": ("POST", 302),
    "researcher:condition_delete": ("POST", 302),
    "researcher:condition_display_name": ("POST", 302),
    "researcher:condition_ir": ("POST", 302),
    "researcher:condition_ir_delete": ("POST", 302),
    "researcher:anchors": ("POST", 302),
    "researcher:blocks": ("POST", 302),
    "researcher:retry": ("POST", 302),
    "researcher:preview": ("GET", 200),
    "researcher:stimulus_audio": ("GET", 200),
    "researcher:metrics": ("GET", 200),
    "researcher:plan": ("GET", 200),
    "researcher:monitor": ("GET", 200),
    "researcher:monitor_json": ("GET", 200),
    "researcher:participant_exclusion": ("POST", 302),
    "researcher:mushra_csv": ("GET", 200),
    "researcher:webmushra_file": ("GET", 200),
    "researcher:reports": ("GET", 200),
    "researcher:reports_json": ("GET", 200),
    "researcher:report_download": ("GET", 200),
    "researcher:api_token": ("GET", 200),
    "api:schema": ("GET", 200),
    "api:docs": ("GET", 200),
    "api:redoc": ("GET", 200),
    "api:experiments": ("GET", 200),
    "api:experiment": ("GET", 200),
    "api:blocks": ("GET", 200),
    "api:block_trapping": ("POST", 400),
    "api:block_trapping_item": ("DELETE", 409),
    "api:excerpts": ("POST", 400),
    "api:checkpoints": ("POST", 400),
    "api:conditions": ("POST", 400),
    "api:condition_ir": ("PUT", 400),
    "api:render": ("POST", 409),
    "api:render_cancel": ("POST", 409),
    "api:job_retry": ("POST", 409),
    "api:open": ("POST", 200),
    "api:close": ("POST", 200),
    "api:status": ("GET", 200),
    "api:metrics": ("GET", 200),
    "api:participants": ("GET", 200),
    "api:ratings": ("GET", 200),
    "api:ratings_csv": ("GET", 200),
    "api:mushra_csv": ("GET", 200),
    "api:webmushra_file": ("GET", 200),
    "api:report": ("GET", 200),
    "api:report_download": ("GET", 200),
}
UNSCOPED = {
    "researcher:experiments",
    "researcher:experiment_new",
    "researcher:import",
    "researcher:api_token",
    "api:experiments",
} | PUBLIC_API


def endpoints() -> dict[str, str]:
    """namespace:name -> route for every pattern under the researcher and api namespaces."""
    found: dict[str, str] = {}

    def walk(patterns, namespace: str | None, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, p.namespace or namespace, prefix + str(p.pattern))
            elif isinstance(p, URLPattern) and namespace in ("researcher", "api") and p.name:
                found[f"{namespace}:{p.name}"] = prefix + str(p.pattern)

    walk(get_resolver().url_patterns, None, "")
    return found


def test_every_endpoint_has_an_expectation():
    names = set(endpoints())
    assert names - set(EXPECTED) == set(), "endpoints without an access expectation"
    assert set(EXPECTED) - names == set(), "expectations for endpoints that no longer exist"


@pytest.fixture
def world(participant_at_trials, researcher, django_user_model, settings):
    from tests.webmushra.test_builder import rate_all

    exp, participant = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    rate_all(participant)
    path = Path(settings.MEDIA_ROOT) / "reports" / "r.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    report = Report.objects.create(experiment=exp, status="done", progress=1.0, file="reports/r.zip")
    kwargs = {
        "pk": exp.pk,
        "excerpt_id": exp.excerpts.get().pk,
        "which": "reference",
        "checkpoint_id": exp.checkpoints.get().pk,
        "condition_id": exp.conditions.filter(kind="model").get().pk,
        "job_id": RenderJob.objects.filter(experiment=exp).first().pk,
        "stimulus_id": Stimulus.objects.filter(experiment=exp).first().pk,
        "report_id": report.pk,
        "participant_id": participant.pk,
        "name": "bs1116.csv",
        "block": 1,
        "number": 1,
    }
    other = django_user_model.objects.create_user("other", password="other-password-22")
    staff = django_user_model.objects.create_user("staff", password="staff-password-33", is_staff=True)
    return {"exp": exp, "participant": participant, "kwargs": kwargs, "other": other, "staff": staff}


def url_for(name: str, route: str, kwargs: dict) -> str:
    needed = {k: v for k, v in kwargs.items() if f"<{k}>" in route or f":{k}>" in route}
    return reverse(name, kwargs=needed)


def call(client, name: str, route: str, kwargs: dict, **extra):
    method, _ = EXPECTED[name]
    url = url_for(name, route, kwargs)
    return getattr(client, method.lower())(url, **extra)


def anonymous_answer(name: str, response) -> bool:
    if name in PUBLIC_API:
        return response.status_code == 200
    if name.startswith("api:"):
        return response.status_code == 401
    return response.status_code == 302 and response.url.startswith(reverse("login"))


def test_access_matrix(client, world):
    routes = endpoints()
    kwargs = world["kwargs"]
    failures: list[str] = []

    def check(role: str, name: str, ok: bool, response) -> None:
        if not ok:
            failures.append(f"{role:10s} {EXPECTED[name][0]:4s} {name}: {response.status_code}")

    # Anonymous.
    for name, route in routes.items():
        r = call(client, name, route, kwargs)
        check("anonymous", name, anonymous_answer(name, r), r)

    # A participant: has a live session of the open test, and tries its token as an API token.
    p = world["participant"]
    client.get(reverse("participant:resume", args=[p.token]))
    for name, route in routes.items():
        # The public schema is read without credentials; a wrong token there is a 401 like anywhere.
        header = {} if name in PUBLIC_API else {"HTTP_AUTHORIZATION": f"Token {p.token}"}
        r = call(client, name, route, kwargs, **header)
        check("participant", name, anonymous_answer(name, r), r)

    # Another researcher: 404 for everything of this experiment, their own lists work.
    client.force_login(world["other"])
    for name, route in routes.items():
        r = call(client, name, route, kwargs)
        ok = r.status_code == 404 if name not in UNSCOPED else r.status_code in (200, 302)
        check("other", name, ok, r)

    # Staff: no silent view of others' experiments in the researcher pages (the admin is for that).
    client.force_login(world["staff"])
    for name, route in routes.items():
        r = call(client, name, route, kwargs)
        ok = r.status_code == 404 if name not in UNSCOPED else r.status_code in (200, 302)
        check("staff", name, ok, r)

    # The owner: reads first, then the actions (some change the state).
    client.force_login(world["exp"].owner)
    ordered = sorted(routes, key=lambda n: (EXPECTED[n][0] == "POST", n == "researcher:close"))
    for name in ordered:
        r = call(client, name, routes[name], kwargs)
        check("owner", name, r.status_code == EXPECTED[name][1], r)

    assert not failures, "\n".join(failures)


def test_shared_researcher_has_the_owners_access(client, world):
    exp = world["exp"]
    exp.shared_with.add(world["other"])
    client.force_login(world["other"])
    assert client.get(reverse("researcher:experiment", args=[exp.pk])).status_code == 200
    assert client.get(f"/api/experiments/{exp.pk}/status/").status_code == 200


def test_staff_see_all_experiments_in_the_admin(client, world, researcher):
    client.force_login(researcher)
    assert client.get("/admin/webmushra/experiment/").status_code == 302
    world["staff"].is_superuser = True
    world["staff"].save()
    client.force_login(world["staff"])
    page = client.get("/admin/webmushra/experiment/")
    assert page.status_code == 200 and world["exp"].title in page.content.decode()


def test_api_token_of_another_user_reaches_only_their_experiments(world):
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=world['other']).key}")
    assert api.get(f"/api/experiments/{world['exp'].pk}/ratings/").status_code == 404
    assert accounts.api_token_for(user=world["other"]) == Token.objects.get(user=world["other"]).key
