"""Researcher pages: list, detail with live render progress, publish/close, downloads."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from .. import selectors, services
from ..models import Experiment


def experiment_for(user, pk: int) -> Experiment:
    """The experiment if this user may see it; 404 otherwise (never reveals existence)."""
    try:
        return selectors.experiments_for(user).get(pk=pk)
    except Experiment.DoesNotExist:
        raise Http404("no such experiment") from None


@login_required
def experiments(request: HttpRequest) -> HttpResponse:
    return render(request, "webmushra/researcher/experiments.html",
                  {"experiments": selectors.experiments_for(request.user)})


@login_required
def experiment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    link = request.build_absolute_uri(reverse("participant:landing", args=[experiment.public_token]))
    return render(request, "webmushra/researcher/experiment.html", {
        "experiment": experiment, "participant_link": link,
        "prolific_link": link + "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}",
        "progress": selectors.render_progress(experiment), "summary": selectors.participant_summary(experiment),
        "conditions": experiment.conditions.select_related("checkpoint"), "excerpts": experiment.excerpts.all(),
    })


@login_required
def experiment_progress(request: HttpRequest, pk: int) -> JsonResponse:
    experiment = experiment_for(request.user, pk)
    return JsonResponse(selectors.render_progress(experiment) | {"participants": selectors.participant_summary(experiment)})


def _action(request: HttpRequest, pk: int, fn) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    if experiment.owner_id != request.user.pk and not request.user.is_staff and \
            not experiment.shared_with.filter(pk=request.user.pk).exists():
        raise Http404("no such experiment")
    try:
        fn(experiment=experiment)
    except services.ServiceError as exc:
        messages.error(request, str(exc))
        return redirect("researcher:experiment", pk=pk)
    return redirect("researcher:experiment", pk=pk)


@login_required
@require_POST
def start_render(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, services.start_render)


@login_required
@require_POST
def open_experiment(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, services.open_experiment)


@login_required
@require_POST
def close_experiment(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(request, pk, services.close_experiment)


@login_required
def ratings_csv(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    response = HttpResponse(selectors.ratings_csv(experiment), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="experiment-{experiment.pk}-ratings.csv"'
    return response


@login_required
def ratings_json(request: HttpRequest, pk: int) -> JsonResponse:
    experiment = experiment_for(request.user, pk)
    return JsonResponse({"experiment": experiment.pk, "ratings": selectors.ratings_rows(experiment),
                         "metrics": selectors.metrics_rows(experiment)})
