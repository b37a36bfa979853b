"""Researcher pages: experiments, render progress and retry, preview, metrics, monitoring,
publish/close, downloads, reports and the API token."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from .. import errors, forms, results_csv, selectors
from ..access import experiment_for, part_of, report_for
from ..http import report_file_response, serve_blinded_file
from ..models import Experiment, RenderJob, Report, Stimulus
from ..rules import FLAGS
from ..services import accounts, privacy, quality, rendering, sessions
from ..services import experiments as experiment_services
from ..services import reports as report_services

log = logging.getLogger(__name__)

PROLIFIC_QUERY = "PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"


def participant_links(request: HttpRequest, experiment: Experiment) -> tuple[str, str]:
    """The participant link and the same link with Prolific's URL parameters."""
    link = request.build_absolute_uri(reverse("participant:landing", args=[experiment.public_token]))
    return link, f"{link}?{PROLIFIC_QUERY}"


def pilot_link(request: HttpRequest, experiment: Experiment) -> str:
    """The researcher's pilot link: sessions through it are kept out of the data."""
    link = request.build_absolute_uri(reverse("participant:landing", args=[experiment.public_token]))
    return f"{link}?pilot={sessions.pilot_link_code(experiment)}"


@login_required
def experiments(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "webmushra/researcher/experiments.html",
        {"experiments": selectors.experiments_for(request.user)},
    )


@login_required
def experiment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    link, prolific = participant_links(request, experiment)
    return render(
        request,
        "webmushra/researcher/experiment.html",
        {
            "experiment": experiment,
            "participant_link": link,
            "prolific_link": prolific,
            "pilot_link": pilot_link(request, experiment),
            "progress": selectors.render_progress(experiment),
            "summary": selectors.participant_summary(experiment),
            "excerpts": experiment.excerpts.all(),
            "checkpoints": experiment.checkpoints.all(),
            "rate_notes": selectors.rate_notes(experiment),
            # The section whose form was sent shows this request's messages (builder._back).
            "section": request.GET.get("section") if request.GET.get("section") in BUILDER_SECTIONS else "",
            **forms.builder_forms(experiment),
            **selectors.builder_facts(experiment),
        },
    )


#: Sections of the experiment page with a form whose messages are shown beside it.
BUILDER_SECTIONS = ("excerpts", "checkpoints", "conditions")


@login_required
def experiment_progress(request: HttpRequest, pk: int) -> JsonResponse:
    experiment = experiment_for(request.user, pk)
    return JsonResponse(
        selectors.render_progress(experiment) | {"participants": selectors.participant_summary(experiment)}
    )


def _action(request: HttpRequest, pk: int, fn, done: str) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    try:
        fn(experiment=experiment)
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect("researcher:experiment", pk=pk)


@login_required
@require_POST
def start_render(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, rendering.start_render, "Rendering started.")


@login_required
@require_POST
def open_experiment(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, experiment_services.open_experiment, "Published: the participant link is open.")


@login_required
@require_POST
def close_experiment(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, experiment_services.close_experiment, "Closed: no new sessions start.")


@login_required
@require_POST
def cancel_render(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(
        request,
        pk,
        rendering.cancel_render,
        "Rendering cancelled. Finished cells are kept; Render continues with the rest.",
    )


@login_required
@require_POST
def delete_experiment(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    if request.POST.get("confirm_title", "").strip() != experiment.title:
        messages.error(request, "Not deleted: type the experiment's title exactly to confirm.")
        return redirect(reverse("researcher:experiment", args=[pk]) + "#delete")
    try:
        experiment_services.delete_experiment(experiment=experiment)
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
        return redirect(reverse("researcher:experiment", args=[pk]) + "#delete")
    messages.success(request, f"Deleted “{experiment.title}” with its files, participants and ratings.")
    return redirect("researcher:experiments")


@login_required
@require_POST
def retry_job(request: HttpRequest, pk: int, job_id: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    job = RenderJob.objects.filter(experiment=experiment, pk=job_id).first()
    if job is None:
        raise Http404("no such job")
    try:
        rendering.retry_job(job=job)
        messages.success(request, f"Job {job.pk} queued again.")
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    return redirect("researcher:experiment", pk=pk)


# --------------------------------------------------------------------------- preview and metrics


@login_required
def preview(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    return render(
        request,
        "webmushra/researcher/preview.html",
        {"experiment": experiment, "items": selectors.preview_items(experiment)},
    )


@login_required
def stimulus_audio(request: HttpRequest, pk: int, stimulus_id: int) -> HttpResponseBase:
    experiment = experiment_for(request.user, pk)
    stimulus = Stimulus.objects.filter(experiment=experiment, pk=stimulus_id).first()
    if stimulus is None:
        raise Http404("no such stimulus")
    return serve_blinded_file(request, stimulus.file)


@login_required
def excerpt_audio(request: HttpRequest, pk: int, excerpt_id: int, which: str) -> HttpResponseBase:
    experiment = experiment_for(request.user, pk)
    excerpt = experiment.excerpts.filter(pk=excerpt_id).first()
    if excerpt is None or which not in ("dry", "reference"):
        raise Http404("no such file")
    field = excerpt.dry_file if which == "dry" else excerpt.reference_file
    return serve_blinded_file(request, field.name)


@login_required
def metrics(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    return render(
        request,
        "webmushra/researcher/metrics.html",
        {"experiment": experiment, "table": selectors.metrics_table(experiment)},
    )


# --------------------------------------------------------------------------- monitoring


def _monitor_data(experiment: Experiment) -> dict:
    try:
        screening = selectors.post_screening(experiment)
    except Exception as exc:  # ratings the analysis rejects must not break the monitoring page
        screening = {"error": str(exc), "rows": [], "excluded": []}
    try:
        retest = selectors.retest_rows(experiment)
    except Exception:  # as above: the monitoring page stays up
        log.exception("test-retest of experiment %s", experiment.pk)
        retest = []
    return {
        "summary": selectors.participant_summary(experiment),
        "participants": selectors.participants_detail(experiment),
        "screening": screening,
        "retest": retest,
        "flag_meanings": FLAGS,
    }


def _deletions(experiment: Experiment) -> list:
    return list(experiment.data_deletions.select_related("by"))


@login_required
def monitor(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    link, prolific = participant_links(request, experiment)
    return render(
        request,
        "webmushra/researcher/monitor.html",
        {
            "experiment": experiment,
            "participant_link": link,
            "prolific_link": prolific,
            "deletions": _deletions(experiment),
            **_monitor_data(experiment),
        },
    )


@login_required
def monitor_json(request: HttpRequest, pk: int) -> JsonResponse:
    experiment = experiment_for(request.user, pk)
    data = _monitor_data(experiment)
    for p in data["participants"]:
        for k in ("started_at", "completed_at", "excluded_at"):
            p[k] = p[k].isoformat() if p[k] else None
    return JsonResponse({"status": experiment.status, **data})


@login_required
@require_POST
def participant_exclusion(request: HttpRequest, pk: int, participant_id: int) -> HttpResponse:
    """Exclude a participant by hand (``action=exclude`` with a ``reason``) or undo it
    (``action=include``): kept in the exports, left out of the analysis, listed in the report."""
    experiment, participant = part_of(request.user, pk, "participants", participant_id)
    action = request.POST.get("action", "exclude")
    try:
        if action == "include":
            quality.include_participant(participant=participant)
            messages.success(request, f"P{participant.pk} is analysed again.")
        elif action == "exclude":
            quality.exclude_participant(participant=participant, reason=request.POST.get("reason", ""))
            messages.success(request, f"P{participant.pk} is excluded from the analysis (kept in the exports).")
        else:
            raise errors.ServiceError("action: exclude or include")
    except errors.ServiceError as exc:
        messages.error(request, f"P{participant.pk}: {exc}")
    return redirect("researcher:monitor", pk=pk)


@login_required
@require_POST
def participant_withdraw(request: HttpRequest, pk: int, participant_id: int) -> HttpResponse:
    """Delete every record of one participant (their withdrawal; ``confirm=withdraw`` required)."""
    experiment, participant = part_of(request.user, pk, "participants", participant_id)
    if request.POST.get("confirm") != "withdraw":
        messages.error(request, f"P{participant.pk}: tick the box to confirm; their data is deleted for good.")
    else:
        record = privacy.withdraw_participant(participant=participant, by=request.user)
        messages.success(
            request,
            f"P{participant_id} withdrawn: {record.counts['trials']} trial(s) and {record.counts['ratings']} rating(s) "
            "deleted (logged without personal data). Build the report again to leave them out of it.",
        )
    return redirect("researcher:monitor", pk=pk)


@login_required
@require_POST
def purge_personal_data(request: HttpRequest, pk: int) -> HttpResponse:
    """Remove the personal data of a closed experiment (``confirm=purge`` required); ratings stay."""
    experiment = experiment_for(request.user, pk)
    if request.POST.get("confirm") != "purge":
        messages.error(request, "Tick the box to confirm: Prolific ids, questionnaires and device data are deleted.")
        return redirect("researcher:monitor", pk=pk)
    try:
        record = privacy.purge_personal_data(experiment=experiment, by=request.user)
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"Personal data of {record.counts['sessions']} session(s) purged; ratings, timings and flags are kept.",
        )
    return redirect("researcher:monitor", pk=pk)


# --------------------------------------------------------------------------- downloads and reports


@login_required
def ratings_csv(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    include_pilot = request.GET.get("pilot") == "1"
    response = HttpResponse(
        selectors.ratings_csv(experiment, include_pilot=include_pilot), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="experiment-{experiment.pk}-ratings.csv"'
    return response


@login_required
def ratings_json(request: HttpRequest, pk: int) -> JsonResponse:
    experiment = experiment_for(request.user, pk)
    return JsonResponse(
        {
            "experiment": experiment.pk,
            "ratings": selectors.ratings_rows(experiment, include_pilot=request.GET.get("pilot") == "1"),
            "catch_trials": selectors.catch_rows(experiment, include_pilot=request.GET.get("pilot") == "1"),
            "repeat_trials": selectors.repeat_rows(experiment, include_pilot=request.GET.get("pilot") == "1"),
            "p808_checks": selectors.check_rows(experiment, include_pilot=request.GET.get("pilot") == "1"),
            "comments": selectors.comment_rows(experiment, include_pilot=request.GET.get("pilot") == "1"),
            "metrics": selectors.metrics_rows(experiment),
        }
    )


@login_required
def mushra_csv(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    response = HttpResponse(results_csv.mushra_csv(experiment), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="mushra.csv"'
    return response


@login_required
def webmushra_file(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    """One of webMUSHRA's result files (``results_csv.WEBMUSHRA_FILES``: mushra.csv, bs1116.csv,
    paired_comparison.csv, lss.csv, lms.csv) for the experiment's blocks."""
    experiment = experiment_for(request.user, pk)
    write = results_csv.WEBMUSHRA_FILES.get(name)
    if write is None:
        raise Http404(f"no webMUSHRA file {name!r}; one of {', '.join(results_csv.WEBMUSHRA_FILES)}")
    response = HttpResponse(write(experiment), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@login_required
def reports(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    if request.method == "POST":
        try:
            report_services.request_report(experiment=experiment, user=request.user)
            messages.success(request, "The report is being built.")
        except errors.ServiceError as exc:
            messages.error(request, str(exc))
        return redirect("researcher:reports", pk=pk)
    rows = list(experiment.reports.all()[:20])
    return render(
        request,
        "webmushra/researcher/reports.html",
        {
            "experiment": experiment,
            "reports": rows,
            "webmushra_files": results_csv.webmushra_files_for(experiment),
            "busy": any(r.status in (Report.Status.QUEUED, Report.Status.RUNNING) for r in rows),
        },
    )


@login_required
def reports_json(request: HttpRequest, pk: int) -> JsonResponse:
    experiment = experiment_for(request.user, pk)
    return JsonResponse({"reports": [report_dict(r) for r in experiment.reports.all()[:20]]})


def report_dict(report: Report) -> dict:
    return {
        "id": report.pk,
        "status": report.status,
        "progress": round(report.progress, 4),
        "error": report.error,
        "created_at": report.created_at.isoformat(),
        "ready": report.status == Report.Status.DONE,
    }


@login_required
def report_download(request: HttpRequest, pk: int, report_id: int) -> FileResponse:
    return report_file_response(report_for(experiment_for(request.user, pk), report_id))


# --------------------------------------------------------------------------- account


@login_required
def api_token(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        accounts.api_token_for(user=request.user, reset=True)
        messages.success(request, "A new API token was created; the old one no longer works.")
        return redirect("researcher:api_token")
    key = accounts.api_token_for(user=request.user)
    return render(
        request,
        "webmushra/researcher/api_token.html",
        {
            "token": key,
            "api_root": request.build_absolute_uri("/api/"),
        },
    )
