"""Participant pages: landing, consent, level, trials, questionnaire, finish.

Nothing a participant receives names a condition: signals are opaque per-trial keys
and stimuli are fetched through per-participant random tokens.
"""

from __future__ import annotations

import json

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, RawPostDataException
from django.http.response import HttpResponseBase
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from .. import errors, rules
from ..http import serve_blinded_file
from ..models import Condition, Experiment, Participant, Stimulus, StimulusToken
from ..ratelimit import ratelimit
from ..services import sessions

STAGE_VIEWS: dict[str, str] = {
    Participant.Stage.CONSENT: "participant:consent",
    Participant.Stage.SCREENING: "participant:screening",
    Participant.Stage.LEVEL: "participant:level",
    Participant.Stage.QUESTIONNAIRE: "participant:questionnaire",
    Participant.Stage.COMPLETED: "participant:done",
    Participant.Stage.SCREENED_OUT: "participant:done",
    Participant.Stage.DECLINED: "participant:done",
}


def _participant(token: str) -> Participant:
    return get_object_or_404(Participant.objects.select_related("experiment"), token=token)


def _error(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _json_body(request: HttpRequest):
    """The request's JSON body, or a 400 response saying why it is not one."""
    if request.content_type != "application/json":
        return _error("send JSON (Content-Type: application/json)")
    try:
        return json.loads(request.body.decode("utf-8"))
    except RawPostDataException:
        return _error("send JSON (Content-Type: application/json)")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _error("the request body is not valid JSON")


def _where(participant: Participant, next_index: int | None | bool = False) -> str:
    """The URL of the participant's current step (``next_index``: the next unsaved trial, when known)."""
    if participant.stage in (Participant.Stage.TRAINING, Participant.Stage.TRIALS):
        index = sessions.next_plan_index(participant) if next_index is False else next_index
        if index is not None:
            return reverse("participant:trial", args=[participant.token, index + 1])
        return reverse("participant:questionnaire", args=[participant.token])
    return reverse(STAGE_VIEWS[participant.stage], args=[participant.token])


@require_http_methods(["GET", "POST"])
@ratelimit("start", methods=["POST"])
def landing(request: HttpRequest, public_token: str) -> HttpResponse:
    experiment = get_object_or_404(Experiment, public_token=public_token)
    if experiment.status != Experiment.Status.OPEN:
        return render(
            request,
            "webmushra/participant/closed.html",
            {"experiment": experiment},
            status=410 if experiment.status == Experiment.Status.CLOSED else 404,
        )
    prolific = {k: request.GET.get(k, request.POST.get(k, ""))[:64] for k in ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")}
    if request.method == "POST":
        try:
            participant = sessions.start_participant(
                experiment=experiment,
                prolific_pid=prolific["PROLIFIC_PID"],
                study_id=prolific["STUDY_ID"],
                session_id=prolific["SESSION_ID"],
                user_agent=request.headers.get("User-Agent", ""),
            )
        except errors.ServiceError as exc:
            return render(
                request, "webmushra/participant/closed.html", {"experiment": experiment, "reason": str(exc)}, status=409
            )
        return redirect(_where(participant))
    return render(request, "webmushra/participant/landing.html", {"experiment": experiment, "prolific": prolific})


def resume(request: HttpRequest, token: str) -> HttpResponse:
    return redirect(_where(_participant(token)))


@require_http_methods(["GET", "POST"])
@ratelimit("save", methods=["POST"])
def consent(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant(token)
    if participant.stage != Participant.Stage.CONSENT:
        return redirect(_where(participant))
    if request.method == "POST":
        agreed = request.POST.get("agree") == "yes"
        participant = sessions.give_consent(participant=participant, agreed=agreed)
        return redirect(_where(participant))
    return render(
        request,
        "webmushra/participant/consent.html",
        {"participant": participant, "experiment": participant.experiment},
    )


@require_http_methods(["GET", "POST"])
@ratelimit("save", methods=["POST"])
def level(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant(token)
    if participant.stage != Participant.Stage.LEVEL:
        return redirect(_where(participant))
    if request.method == "POST":
        try:
            gain = float(request.POST.get("gain_db", "0"))
            participant = sessions.set_level(participant=participant, gain_db=gain)
        except (ValueError, errors.ServiceError) as exc:
            return render(
                request,
                "webmushra/participant/level.html",
                {"participant": participant, "error": str(exc), **_level_context(participant)},
                status=400,
            )
        return redirect(_where(participant))
    return render(
        request, "webmushra/participant/level.html", {"participant": participant, **_level_context(participant)}
    )


def _level_context(participant: Participant) -> dict:
    """The level page plays the first trial's open reference: its own URL, never a signal's."""
    url = reverse("participant:reference", args=[participant.token, 1]) if participant.plan else None
    return {
        "level_data": {"url": url, "post_url": reverse("participant:level", args=[participant.token])},
        "experiment": participant.experiment,
    }


@require_http_methods(["GET", "POST"])
@ratelimit("save", methods=["POST"], as_json=True)
def screening(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant(token)
    if request.method == "POST":
        body = _json_body(request)
        if isinstance(body, JsonResponse):
            return body
        if participant.stage == Participant.Stage.SCREENING:
            try:
                participant = sessions.score_headphone_check(
                    participant=participant, answers=body.get("answers") if isinstance(body, dict) else None
                )
            except errors.ServiceError as exc:
                return _error(str(exc))
        return JsonResponse({"saved": True, "next_url": _where(participant)})
    if participant.stage != Participant.Stage.SCREENING:
        return redirect(_where(participant))
    cfg = rules.headphone_settings(participant.experiment)
    # The targets are known to the page (as in published implementations); the server scores
    # against its own stored copy, so editing the page changes nothing.
    headphone_data = {
        "post_url": reverse("participant:screening", args=[participant.token]),
        "csrf_token": get_token(request),
        "trials": sessions.headphone_trials(participant=participant),
        "max_plays": int(cfg.get("max_plays", 1)),
    }
    return render(
        request,
        "webmushra/participant/screening.html",
        {"participant": participant, "experiment": participant.experiment, "headphone_data": headphone_data},
    )


def trial_data(request: HttpRequest, participant: Participant, index: int) -> dict:
    """The JSON the player needs for one trial (no condition names unless training)."""
    entry = participant.plan[index]
    # condition id -> this participant's token for the condition's stimulus of this trial's excerpt
    tokens = dict(
        StimulusToken.objects.filter(participant=participant, stimulus__excerpt__trials__pk=entry["trial"]).values_list(
            "stimulus__condition_id", "token"
        )
    )
    keys = sessions.signal_keys(entry)
    tests = [e for e in participant.plan if not e.get("training")]
    number = sum(1 for e in participant.plan[: index + 1] if e.get("training") == entry.get("training"))
    total = len(tests) if not entry.get("training") else len(participant.plan) - len(tests)
    data = {
        "trial": {
            "number": number,
            "total": total,
            "training": bool(entry.get("training")),
            "title": f"{'Training' if entry.get('training') else 'Trial'} {number} of {total}",
        },
        # The open reference is served under its own token, distinct from the hidden one.
        "reference": {"url": reverse("participant:reference", args=[participant.token, index + 1])},
        "signals": [{"key": k, "url": reverse("participant:stimulus", args=[tokens[cid]])} for k, cid in keys.items()],
        # The page's rules and the signal cap, from rules.py only: the player keeps no defaults.
        "rules": rules.player_rules(participant.experiment),
        "max_signals": rules.MAX_SIGNALS_PER_TRIAL,
        "save_url": reverse("participant:trial", args=[participant.token, index + 1]),
        "idempotency_key": entry["key"],
        "csrf_token": get_token(request),
        "instructions": participant.experiment.instructions,
        "gain_db": participant.level.get("gain_db", 0.0),
    }
    if entry.get("training"):
        labels = dict(Condition.objects.filter(pk__in=keys.values()).values_list("pk", "label"))
        data["labels"] = {k: labels[cid] for k, cid in keys.items()}
    return data


@require_http_methods(["GET", "POST"])
@ratelimit("save", methods=["POST"], as_json=True)
def trial(request: HttpRequest, token: str, number: int) -> HttpResponse:
    index = number - 1
    if request.method == "POST":
        body = _json_body(request)
        if isinstance(body, JsonResponse):
            return body
        if not isinstance(body, dict):
            return _error("the request body must be a JSON object")
        try:
            # The participant is read once, locked, inside the save's transaction.
            result = sessions.submit_trial(
                token=token,
                index=index,
                idempotency_key=body.get("idempotency_key"),
                ratings=body.get("ratings"),
                telemetry=body.get("telemetry") if isinstance(body.get("telemetry"), dict) else {},
            )
        except Participant.DoesNotExist:
            raise Http404("no such participant") from None
        except errors.TrialNotFound:
            raise Http404("no such trial") from None
        except errors.ConflictError as exc:
            return _error(str(exc), status=409)
        except errors.ServiceError as exc:
            return _error(str(exc))
        return JsonResponse(
            {"saved": True, "replayed": not result.created, "next_url": _where(result.participant, result.next_index)}
        )
    participant = _participant(token)
    if not (0 <= index < len(participant.plan)):
        raise Http404("no such trial")
    if participant.stage not in (Participant.Stage.TRAINING, Participant.Stage.TRIALS):
        return redirect(_where(participant))
    expected = sessions.next_plan_index(participant)
    if expected is None or expected != index:
        return redirect(_where(participant))
    return render(
        request,
        "webmushra/participant/trial.html",
        {
            "participant": participant,
            "experiment": participant.experiment,
            "trial_data": trial_data(request, participant, index),
        },
    )


@ratelimit("media")
def reference(request: HttpRequest, token: str, number: int) -> HttpResponseBase:
    """The open reference of a trial (same audio as the hidden reference, another URL)."""
    participant = _participant(token)
    index = number - 1
    if not (0 <= index < len(participant.plan)):
        raise Http404("no such trial")
    path = Stimulus.objects.filter(
        excerpt__trials__pk=participant.plan[index]["trial"], condition__kind="hidden_reference"
    ).values_list("file", flat=True)[:1]
    if not path:
        raise Http404("no reference for this trial")
    return serve_blinded_file(request, path[0])


@ratelimit("media")
def stimulus(request: HttpRequest, token: str) -> HttpResponseBase:
    # One indexed lookup for the file path: this is the most frequent request of a session.
    path = StimulusToken.objects.filter(token=token).values_list("stimulus__file", flat=True)[:1]
    if not path:
        raise Http404("no such stimulus")
    return serve_blinded_file(request, path[0])


@require_http_methods(["GET", "POST"])
@ratelimit("save", methods=["POST"])
def questionnaire(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant(token)
    if participant.stage != Participant.Stage.QUESTIONNAIRE:
        return redirect(_where(participant))
    fields = rules.questionnaire_fields(participant.experiment)
    if request.method == "POST":
        answers = {f["name"]: request.POST.get(f["name"], "").strip() for f in fields}
        missing = [f["label"] for f in fields if f.get("required") and not answers[f["name"]]]
        if missing:
            return render(
                request,
                "webmushra/participant/questionnaire.html",
                {
                    "participant": participant,
                    "fields": fields,
                    "answers": answers,
                    "error": "Please answer: " + ", ".join(missing),
                },
                status=400,
            )
        participant = sessions.submit_questionnaire(participant=participant, answers=answers)
        return redirect(_where(participant))
    return render(
        request,
        "webmushra/participant/questionnaire.html",
        {"participant": participant, "experiment": participant.experiment, "fields": fields, "answers": {}},
    )


def done(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant(token)
    if participant.stage not in (
        Participant.Stage.COMPLETED,
        Participant.Stage.SCREENED_OUT,
        Participant.Stage.DECLINED,
    ):
        return redirect(_where(participant))
    redirect_url = participant.experiment.config.get("completion_url", "")
    if redirect_url and participant.stage == Participant.Stage.COMPLETED and participant.completion_code:
        sep = "&" if "?" in redirect_url else "?"
        redirect_url = f"{redirect_url}{sep}cc={participant.completion_code}"
    return render(
        request,
        "webmushra/participant/done.html",
        {"participant": participant, "experiment": participant.experiment, "redirect_url": redirect_url},
    )
