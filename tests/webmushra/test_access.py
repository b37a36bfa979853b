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
    client.force_login(researcher)
    for url in urls:
        assert client.get(url).status_code == 200, url
    # Staff have no silent view of someone else's experiment in the researcher pages.
    client.force_login(staff)
    for url in urls:
        assert client.get(url).status_code == 404, url
    assert exp.title not in client.get(reverse("researcher:experiments")).content.decode()
    exp.shared_with.add(other)
    client.force_login(other)
    assert client.get(urls[0]).status_code == 200


def test_an_invited_researcher_sets_a_password_once_and_signs_in(client, django_user_model):
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    call_command("create_researcher", "ada", email="ada@example.org", base_url="https://t.example", stdout=out)
    link = [line for line in out.getvalue().splitlines() if line.startswith("https://t.example/")][0]
    user = django_user_model.objects.get(username="ada")
    assert not user.has_usable_password() and user.email == "ada@example.org" and not user.is_staff
    assert client.post(reverse("login"), {"username": "ada", "password": ""}).status_code == 200
    path = link.removeprefix("https://t.example")
    page = client.get(path, follow=True)
    assert page.status_code == 200 and "new_password1" in page.content.decode()
    form_url = page.redirect_chain[-1][0] if page.redirect_chain else path
    r = client.post(form_url, {"new_password1": "a-fresh-password-9", "new_password2": "a-fresh-password-9"})
    assert r.status_code == 302
    assert client.login(username="ada", password="a-fresh-password-9")
    # Once used, the link is dead.
    client.logout()
    again = client.get(path, follow=True).content.decode()
    assert "new_password1" not in again
    # A taken name: exit code 2 with the reason, nothing created.
    with pytest.raises(CommandError, match="taken") as failure:
        call_command("create_researcher", "ADA", stdout=io.StringIO())
    assert failure.value.returncode == 2
    assert django_user_model.objects.filter(username__iexact="ada").count() == 1


def test_owner_shares_and_unshares_and_only_the_owner_may_share(client, django_user_model, researcher):
    exp = experiments.create_experiment(owner=researcher, title="Shared")
    bob = django_user_model.objects.create_user("bob", "bob@example.org", password="bob-password-77")
    eve = django_user_model.objects.create_user("eve", password="eve-password-77")
    url = reverse("researcher:share", args=[exp.pk])
    client.force_login(bob)
    assert client.post(url, {"with": "bob"}).status_code == 404  # not shared yet: not even visible
    client.force_login(researcher)
    r = client.post(url, {"with": "nobody"}, follow=True)
    assert any("no researcher called 'nobody'" in str(m) for m in r.context["messages"])
    assert client.post(url, {"with": "BOB@example.org"}).status_code == 302
    assert list(exp.shared_with.all()) == [bob]
    page = client.get(reverse("researcher:settings", args=[exp.pk])).content.decode()
    assert "bob (bob@example.org)" in page
    client.force_login(bob)
    assert client.get(reverse("researcher:experiment", args=[exp.pk])).status_code == 200
    r = client.post(url, {"with": "eve"}, follow=True)
    assert any("only the experiment's owner" in str(m) for m in r.context["messages"])
    assert list(exp.shared_with.all()) == [bob]
    client.force_login(researcher)
    assert client.post(url, {"remove": str(bob.pk)}).status_code == 302
    assert not exp.shared_with.exists()
    client.force_login(bob)
    assert client.get(reverse("researcher:experiment", args=[exp.pk])).status_code == 404
    assert eve.pk  # eve never gained access


def test_healthz_reports_database_and_broker(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True, "database": "ok", "broker": "ok"}
