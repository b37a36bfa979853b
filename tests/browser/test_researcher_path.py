"""The researcher's whole path in Chromium, against the live server and a real Celery worker:
log in, create, upload (one upload refused), a condition whose render fails, the fix that
re-renders only its cells, a pilot session, publish, participants, the report bundle and its
tables, a withdrawal and the deletion of the experiment with its files."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.browser.conftest import screenshot
from tests.conftest import wait_for, wait_js
from tests.paths import fixture_path
from tests.trials import save_body

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("sync_orm_beside_playwright"),
]

TITLE = "Amp shoot-out"
#: The analysis with few resamples: the report's numbers are tested in tests/evaluation.
FAST = {"bootstrap_resamples": 200, "permutation_resamples": 500, "correlation_resamples": 200}
#: A NAM linear model as a training run that diverged leaves it: finite weights (it loads and is
#: accepted) so large that any input of ordinary level overflows float32 to infinity when rendered.
DIVERGED = {
    "version": "0.5.4",
    "architecture": "Linear",
    "config": {"receptive_field": 8, "bias": False},
    "weights": [3e38] * 8,
    "sample_rate": 48000,
}


def in_viewport(page: Any, selector: str) -> bool:
    """Shown, and wholly inside the visible part of the page."""
    element = page.locator(selector)
    box = element.bounding_box()
    height, width = page.viewport_size["height"], page.viewport_size["width"]
    return (
        element.is_visible()
        and box is not None
        and box["y"] >= 0
        and box["y"] + box["height"] <= height
        and box["x"] >= 0
        and box["x"] + box["width"] <= width
    )


def messages_text(page: Any) -> str:
    return " ".join(page.locator(".messages").all_inner_texts())


def model_cells(experiment_pk: int, label: str) -> dict[int, tuple]:
    """The render jobs of one condition: id -> (excerpt, status, output file, finished, attempts, file bytes)."""
    from django.conf import settings

    from webmushra.models import RenderJob

    out = {}
    for j in RenderJob.objects.filter(experiment_id=experiment_pk, kind="model", condition__label=label):
        data = (Path(settings.MEDIA_ROOT) / j.output_file).read_bytes() if j.output_file else b""
        out[j.pk] = (j.excerpt_id, j.status, j.output_file, j.finished_at, j.attempts, data)
    return out


def take_part(client: Client, public_token: str, agent: str) -> tuple[int, list[dict]]:
    """One participant's whole session over HTTP: start, consent, level, every trial (with the
    device part and slider traces the player sends), the questionnaire. Returns their id and
    what was sent per test trial."""
    from webmushra.models import Participant
    from webmushra.services import sessions

    r = client.post(reverse("participant:landing", args=[public_token]), HTTP_USER_AGENT=agent)
    assert r.status_code == 302, r.content[:300]
    token = r.url.split("/p/")[1].split("/")[0]
    assert client.post(reverse("participant:consent", args=[token]), {"agree": "yes"}).status_code == 302
    assert client.post(reverse("participant:level", args=[token]), {"gain_db": "-3"}).status_code == 302
    p = Participant.objects.get(token=token)
    sent = []
    while (index := sessions.next_plan_index(p)) is not None:
        url = reverse("participant:trial", args=[token, index + 1])
        assert client.get(url).status_code == 200
        body = save_body(p, index, client=client)
        moves = [
            {"key": key, "value": value, "t_ms": 900 + 700 * n + step * 150}
            for n, (key, value) in enumerate(sorted(body["ratings"].items()))
            for step, value in enumerate((50, value))
        ]
        body["telemetry"] |= {
            "slider_moves": moves,
            "user_agent": agent,
            "audio": {"context_sample_rate": 48000, "stimulus_sample_rate": 48000, "output_latency": 0.032},
            "screen": {"width": 1440, "height": 900, "dpr": 2},
            "viewport": {"width": 1280, "height": 800},
        }
        r = client.post(url, json.dumps(body), content_type="application/json")
        assert r.status_code == 200 and r.json()["saved"] is True, r.content
        if not p.plan[index].get("training"):
            sent.append({"entry": p.plan[index], "moves": moves})
        p.refresh_from_db()
    if p.stage == "questionnaire":
        client.post(reverse("participant:questionnaire", args=[token]), {"comment": "fine"})
    p.refresh_from_db()
    assert p.stage == "completed" and not p.is_pilot
    return p.pk, sent


def test_the_researchers_whole_path(
    django_db_setup, live_server, page: Any, browser: Any, start_worker, excerpt_files, researcher, tmp_path, settings
):
    from webmushra.models import (
        Checkpoint,
        Experiment,
        Participant,
        Rating,
        RenderJob,
        Report,
        Stimulus,
        TrialResponse,
    )

    worker = start_worker()
    base = live_server.url
    # The first checkpoint upload loads PyTorch in the server: more than the fixture's 10 s on a busy machine.
    page.set_default_timeout(60_000)
    pairs = [excerpt_files(seconds=1.5, offset=i * 1.0, name=f"take{i}") for i in range(2)]

    # Log in and create the experiment.
    page.goto(base + "/r/")
    page.fill("#id_username", "researcher")
    page.fill("#id_password", "a-long-password-1")
    page.click("button[type=submit]")
    page.click("#new-experiment")
    page.fill("#id_title", TITLE)
    page.click("#create")
    assert page.locator("h1").inner_text() == TITLE
    exp = Experiment.objects.get(title=TITLE)
    assert exp.owner == researcher and exp.status == "draft"

    # Excerpts, then one refused upload: its reason in view and focused, nothing added.
    page.set_input_files("#id_dry", [str(d) for d, _ in pairs])
    page.set_input_files("#id_reference", [str(r) for _, r in pairs])
    page.click("#upload-excerpts")
    assert "Added 2 excerpt(s)." in messages_text(page)
    assert sorted(exp.excerpts.values_list("name", flat=True)) == ["take0", "take1"]
    notes = tmp_path / "session_notes_dry.wav"
    notes.write_text("amp settings: gain 5, bass 6 (notes, not audio)")
    page.set_input_files("#id_dry", str(notes))
    page.set_input_files("#id_reference", str(notes))
    page.click("#upload-excerpts")
    said = page.locator("#excerpts #section-messages")
    assert "not added" in said.inner_text() and "session_notes_dry.wav" in said.inner_text()
    assert in_viewport(page, "#excerpts #section-messages")
    wait_js(page, "document.activeElement && document.activeElement.id === 'section-messages'", timeout=5000)
    assert exp.excerpts.count() == 2

    # Checkpoints and conditions: a real amp model, and a diverged one that loads but cannot render.
    diverged = tmp_path / "diverged_run.nam"
    diverged.write_text(json.dumps(DIVERGED))
    for path, name in ((fixture_path("models", "coreaudioml", "ht1_lstm32.json"), "HT-1"), (diverged, "Diverged")):
        page.set_input_files("#id_file", str(path))
        page.fill("#id_name", name)
        page.click("#upload-checkpoint")
        assert f"Recognised {path.name}" in messages_text(page)
    for name, label in (("HT-1", "HT-1 LSTM"), ("Diverged", "Diverged run")):
        page.select_option("#id_checkpoint", value=str(Checkpoint.objects.get(experiment=exp, name=name).pk))
        page.fill("#id_label", label)
        page.click("#add-condition")
        assert f"Added condition '{label}'." in messages_text(page)

    # Render: the diverged condition's cells fail, with the reason on the page; the rest render.
    page.click("#render")
    wait_js(page, "document.getElementById('failed-cells') !== null", timeout=120_000)
    exp.refresh_from_db()
    assert exp.status == "draft" and page.locator("#status").get_attribute("data-status") == "draft"
    failed = page.locator("#failed-cells")
    assert in_viewport(page, "#failed-h") and "2 render jobs failed" in failed.inner_text()
    for take in ("take0", "take1"):
        assert f"Diverged run × {take}: model produced NaN or infinite output" in failed.inner_text()
    assert {j[1] for j in model_cells(exp.pk, "Diverged run").values()} == {"failed"}
    kept = model_cells(exp.pk, "HT-1 LSTM")
    assert len(kept) == 2 and {j[1] for j in kept.values()} == {"done"} and all(j[5] for j in kept.values())
    screenshot(page, "researcher-path-failed")

    # The fix: remove the condition, add another model; only the new cells render.
    page.locator("#conditions tr", has_text="Diverged run").get_by_role("button", name="Remove", exact=True).click()
    assert "Diverged run" not in page.locator("#conditions table").inner_text()
    assert RenderJob.objects.filter(experiment=exp, condition__label="Diverged run").count() == 0
    page.set_input_files("#id_file", str(fixture_path("models", "nam", "lstm_h3.nam")))
    page.fill("#id_name", "Microtubes")
    page.click("#upload-checkpoint")
    page.select_option("#id_checkpoint", value=str(Checkpoint.objects.get(experiment=exp, name="Microtubes").pk))
    page.fill("#id_label", "Microtubes LSTM")
    page.click("#add-condition")
    assert page.locator("#render").inner_text() == "Render what changed"
    page.click("#render")
    wait_js(page, "document.getElementById('status').dataset.status === 'ready'", timeout=120_000)
    assert page.locator("#overall-text").inner_text() == "100 %" and page.locator("#failed-cells").count() == 0
    # The cells that had rendered are the same rows with the same files, rendered once.
    assert model_cells(exp.pk, "HT-1 LSTM") == kept
    new = model_cells(exp.pk, "Microtubes LSTM")
    assert len(new) == 2 and {j[1] for j in new.values()} == {"done"} and min(new) > max(kept)
    assert {j[4] for j in [*kept.values(), *new.values()]} == {1}
    n_conditions = exp.conditions.count()
    assert n_conditions == 5  # hidden reference, two anchors, two models
    assert Stimulus.objects.filter(experiment=exp).count() == n_conditions * 2

    # Publish; a pilot session through the pilot link, marked as a pilot and kept apart.
    exp.config = {**exp.config, "analysis": FAST}
    exp.save(update_fields=["config"])
    page.click("#publish")
    exp.refresh_from_db()
    assert exp.status == "open" and page.locator("#participant-link").inner_text().endswith(f"/t/{exp.public_token}/")
    pilot_url = page.input_value("#pilot-url")
    assert "?pilot=" in pilot_url
    pilot_context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        pilot = pilot_context.new_page()
        pilot.goto(pilot_url)
        assert in_viewport(pilot, "#pilot-note")
        pilot.click("#start")
        # The default consent text says what the pages record.
        consent = pilot.locator(".prose").inner_text()
        assert "how you moved the sliders" in consent and "Prolific ID" in consent
        pilot.click("#agree")
        piloted = Participant.objects.get(experiment=exp)
        assert piloted.is_pilot and piloted.consented_at is not None and piloted.stage == "level"
        pilot.click("#level-done")
        pilot.wait_for_selector(".wm")
        piloted.refresh_from_db()
        assert piloted.stage in ("training", "trials") and piloted.level["gain_db"] == 0
    finally:
        pilot_context.close()
    page.goto(base + reverse("researcher:monitor", args=[exp.pk]))
    assert page.locator("#n-pilot").inner_text() == "1" and page.locator("#n-started").inner_text() == "0"

    # Two participants take part over HTTP.
    first, first_sent = take_part(Client(), exp.public_token, "Mozilla/5.0 (X11; Linux x86_64) Listener/1")
    second, _ = take_part(Client(), exp.public_token, "=cmd|' /C calc'!A0")
    page.reload()
    assert page.locator("#n-started").inner_text() == "2" and page.locator("#n-completed").inner_text() == "2"

    # The report bundle, built by the worker, downloaded and opened.
    page.goto(base + reverse("researcher:reports", args=[exp.pk]))
    page.click("#build-report")
    report = wait_for(
        lambda: Report.objects.filter(experiment=exp, status__in=["done", "failed"]).first(),
        timeout=480,
        interval=0.5,
        what="the report to be built",
    )
    assert report.status == "done", f"{report.error}\n{worker.log[-4000:]}"
    wait_js(page, "[...document.querySelectorAll('#reports a')].some(a => a.textContent === 'report.zip')", 60_000)
    with page.expect_download() as info:
        page.click("#reports a:text('report.zip')")
    bundle = tmp_path / "report.zip"
    info.value.save_as(bundle)
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        assert {"report.html", "stats.json", "descriptives.csv", "slider_traces.csv", "sessions.csv"} <= names
        traces = list(csv.DictReader(io.StringIO(zf.read("slider_traces.csv").decode())))
        devices = {r["participant"]: r for r in csv.DictReader(io.StringIO(zf.read("sessions.csv").decode()))}
        stats = json.loads(zf.read("stats.json"))
    labels = dict(exp.conditions.values_list("pk", "label"))
    expected = [
        (str(position), labels[trial["entry"]["conditions"][ord(m["key"]) - ord("a")]], str(m["t_ms"]), str(m["value"]))
        for position, trial in enumerate(first_sent)
        for m in trial["moves"]
    ]
    got = [
        (r["trial_position"], r["condition"], r["t_ms"], r["value"]) for r in traces if r["participant"] == f"P{first}"
    ]
    assert got == expected and len(traces) == 2 * len(expected)
    # The pilot is not in the data; a formula in a user agent is neutralised.
    assert set(devices) == {f"P{first}", f"P{second}"}
    assert devices[f"P{first}"]["user_agent"] == "Mozilla/5.0 (X11; Linux x86_64) Listener/1"
    assert devices[f"P{second}"]["user_agent"] == "'=cmd|' /C calc'!A0"
    assert (devices[f"P{first}"]["context_sample_rate"], devices[f"P{first}"]["output_latency_s"]) == ("48000", "0.032")
    assert stats["participants"]["total"] == 2 and stats["items"] == ["take0", "take1"]

    # A participant withdraws: every row of theirs goes, the other's stay.
    page.goto(base + reverse("researcher:monitor", args=[exp.pk]))
    row = page.locator("#participants tr", has_text=f"P{second}")
    row.locator("summary", has_text="Withdraw").click()
    row.get_by_role("checkbox").check()
    page.click(f"#withdraw-{second}")
    assert f"P{second} withdrawn:" in messages_text(page)
    assert not Participant.objects.filter(pk=second).exists()
    assert Rating.objects.filter(participant_id=second).count() == 0
    assert TrialResponse.objects.filter(participant_id=second).count() == 0
    ratings_csv = page.request.get(base + reverse("researcher:ratings_csv", args=[exp.pk])).text()
    ids = {r["participant"] for r in csv.DictReader(io.StringIO(ratings_csv))}
    assert ids == {f"P{first}"} and Rating.objects.filter(participant_id=first).count() > 0

    # Close and delete: the experiment, its rows and every file it stored are gone.
    media = Path(settings.MEDIA_ROOT)
    stored = [
        media / name
        for name in [
            *[f for x in exp.excerpts.all() for f in (x.dry_file.name, x.reference_file.name)],
            *[c.file.name for c in exp.checkpoints.all()],
            *Stimulus.objects.filter(experiment=exp).values_list("file", flat=True),
            *RenderJob.objects.filter(experiment=exp).exclude(output_file="").values_list("output_file", flat=True),
            *exp.reports.values_list("file", flat=True),
        ]
        if name
    ]
    assert len(stored) >= 2 + 3 + 10 + 4 + 1 and all(p.is_file() for p in stored)
    page.goto(base + reverse("researcher:experiment", args=[exp.pk]))
    page.click("#close")
    assert page.locator("#status").get_attribute("data-status") == "closed"
    page.fill("#confirm-title", TITLE)
    page.click("#delete-experiment")
    assert f"Deleted “{TITLE}”" in messages_text(page)
    assert not Experiment.objects.filter(pk=exp.pk).exists()
    assert Participant.objects.count() == 0 and Rating.objects.count() == 0 and RenderJob.objects.count() == 0
    assert [p for p in stored if p.exists()] == []
    assert page.js_errors == []
