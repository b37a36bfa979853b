"""Researcher pages: who may see what."""

from __future__ import annotations

import pytest
from django.urls import reverse

from webmushra.services import experiments

pytestmark = pytest.mark.django_db


def test_researcher_pages_by_role(client, django_user_model, researcher):
    exp = experiments.create_experiment(owner=researcher, title="Mine")
    other = django_user_model.objects.create_user("other", password="another-password-2")
    staff = django_user_model.objects.create_user("staff", password="staff-password-3", is_staff=True)
    urls = [
        reverse("researcher:experiment", args=[exp.pk]),
        reverse("researcher:progress", args=[exp.pk]),
        reverse("researcher:ratings_csv", args=[exp.pk]),
        reverse("researcher:ratings_json", args=[exp.pk]),
    ]
    for url in urls:
        r = client.get(url)
        assert r.status_code == 302 and r.url.startswith(reverse("login")), url
    client.force_login(other)
    for url in urls:
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("researcher:render", args=[exp.pk])).status_code == 404
    for user in (researcher, staff):
        client.force_login(user)
        for url in urls:
            assert client.get(url).status_code == 200, (user, url)
    exp.shared_with.add(other)
    client.force_login(other)
    assert client.get(urls[0]).status_code == 200


def test_healthz_reports_database_and_broker(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True, "database": "ok", "broker": "ok"}
