"""The report bundle's tidy tables of what the trial pages recorded: slider traces and the
sessions' devices and audio contexts, equal to what the sessions stored."""

from __future__ import annotations

import csv
import io
import sys
import types
import zipfile

import pytest
from django.conf import settings

from tests.trials import save_body
from webmushra import selectors
from webmushra.models import Condition, Participant, Report
from webmushra.services import reports, sessions

pytestmark = pytest.mark.django_db

AGENT = '=HYPERLINK("http://example.org")Mozilla/5.0'
AUDIO = {
    "context_sample_rate": 48000,
    "stimulus_sample_rate": 48000,
    "stimulus_rates_differ": False,
    "resampled": False,
    "base_latency": 0.01,
    "output_latency": 0.0425,
}


def _save_all(p: Participant, device: bool) -> list[dict]:
    """Save every trial with a slider trace of three points per signal (one of them a drag
    that ends lower); the device part only when ``device``. Returns what was stored per trial."""
    stored = []
    while (i := sessions.next_plan_index(p)) is not None:
        body = save_body(p, i)
        moves = []
        for n, (key, score) in enumerate(body["ratings"].items()):
            t0 = 1000 + 2000 * n
            moves += [
                {"key": key, "value": 50, "t_ms": t0},
                {"key": key, "value": min(100, score + 7), "t_ms": t0 + 400},
                {"key": key, "value": score, "t_ms": t0 + 900},
            ]
        telemetry = {**body["telemetry"], "slider_moves": moves}
        if device:
            telemetry |= {
                "user_agent": AGENT,
                "audio": AUDIO,
                "screen": {"width": 1920, "height": 1080, "dpr": 1.5},
                "viewport": {"width": 1280, "height": 900},
                "decode_ms": 321,
            }
        sessions.submit_trial(
            participant=p,
            index=i,
            idempotency_key=body["idempotency_key"],
            ratings=body["ratings"],
            telemetry=telemetry,
        )
        stored.append({"entry": Participant.objects.get(pk=p.pk).plan[i], "moves": moves})
    return stored


def _bundle_table(report: Report, name: str) -> list[dict]:
    with zipfile.ZipFile(settings.MEDIA_ROOT / report.file) as zf:
        return list(csv.DictReader(io.StringIO(zf.read(name).decode())))


def test_bundle_has_slider_traces_and_sessions_as_stored(participant_at_trials, monkeypatch):
    exp, p = participant_at_trials(n_excerpts=2, seconds=1.0, config={"training": False})
    stored = _save_all(p, device=True)
    q = sessions.give_consent(participant=sessions.start_participant(experiment=exp), agreed=True)
    q = sessions.set_level(participant=q, gain_db=0.0)
    Participant.objects.filter(pk=q.pk).update(user_agent="HeaderAgent/1.0")
    _save_all(q, device=False)

    def quick_build(ratings, metrics, settings_, out_dir, **kw):
        (out_dir / "report.html").write_text("<h1>Report</h1>")
        return {}

    # The analysis is tested on its own; here only the platform's own tables are looked at.
    monkeypatch.setitem(sys.modules, "evaluation.report", types.SimpleNamespace(build_report=quick_build))
    report = reports.request_report(experiment=exp)
    assert reports.build_report(report_id=report.pk) == "done", Report.objects.get(pk=report.pk).error
    report.refresh_from_db()
    assert {"slider_traces.csv", "sessions.csv"} <= set(report.summary["files"])

    traces = _bundle_table(report, "slider_traces.csv")
    assert list(traces[0]) == selectors.SLIDER_TRACE_COLUMNS
    labels = dict(Condition.objects.filter(experiment=exp).values_list("pk", "label"))
    # Expected rows, built from the stored plan and moves: key 'a' is the plan's first condition.
    expected = []
    for position, trial in enumerate(stored):
        for point, move in enumerate(trial["moves"]):
            page = ord(move["key"]) - ord("a")
            expected.append(
                {
                    "participant": f"P{p.pk}",
                    "trial_position": str(position),
                    "condition": labels[trial["entry"]["conditions"][page]],
                    "signal_position": str(page + 1),
                    "point": str(point),
                    "t_ms": str(move["t_ms"]),
                    "value": str(move["value"]),
                }
            )
    mine = [{k: r[k] for k in expected[0]} for r in traces if r["participant"] == f"P{p.pk}"]
    assert mine == expected
    n_signals = exp.conditions.count()
    assert len(traces) == 2 * (2 * n_signals * 3)  # two sessions, two trials, three points a signal
    # Each signal's last point is its rating.
    ratings = {(f"P{r.participant_id}", r.trial.excerpt.name, r.condition.label): r.score for r in p.ratings.all()}
    last = {(r["participant"], r["item"], r["condition"]): int(r["value"]) for r in traces}
    assert {k: last[k] for k in ratings} == ratings

    rows = {r["participant"]: r for r in _bundle_table(report, "sessions.csv")}
    assert list(next(iter(rows.values()))) == selectors.SESSION_DEVICE_COLUMNS
    first = rows[f"P{p.pk}"]
    # A formula in the user agent is neutralised as in every other export.
    assert first["user_agent"] == "'" + AGENT
    latency = (first["output_latency_s"], first["base_latency_s"])
    assert first["context_sample_rate"] == "48000" and latency == ("0.0425", "0.01")
    assert (first["resampled"], first["screen_width"], first["device_pixel_ratio"]) == ("False", "1920", "1.5")
    assert (first["viewport_height"], first["decode_ms"], first["trials_reporting"]) == ("900", "321", "2")
    second = rows[f"P{q.pk}"]
    # No device part stored: the header's user agent, and empty cells, never made-up numbers.
    assert second["user_agent"] == "HeaderAgent/1.0" and second["context_sample_rate"] == ""
    assert second["output_latency_s"] == "" and second["trials_reporting"] == "0"


def test_hostile_telemetry_gives_empty_cells_not_errors(participant_at_trials):
    exp, p = participant_at_trials(n_excerpts=1, seconds=1.0, config={"training": False})
    _save_all(p, device=True)
    response = p.responses.get()
    response.telemetry = {
        **response.telemetry,
        "slider_moves": [{"key": "zz", "value": "=1+1", "t_ms": "soon"}, "not a move", {"key": "a"}],
        "audio": {"context_sample_rate": "44100", "output_latency": True},
    }
    response.save()
    rows = selectors.slider_trace_rows(exp)
    assert [(r["condition"], r["t_ms"], r["value"]) for r in rows][0] == (None, None, None)
    assert len(rows) == 2 and rows[1]["signal_position"] == 1
    (device,) = selectors.session_device_rows(exp)
    assert device["context_sample_rate"] is None and device["output_latency_s"] is None
    text = selectors.table_csv([{"participant": "@cmd", "item": "-2"}], ["participant", "item"])
    assert text.splitlines()[1] == "'@cmd,'-2"
