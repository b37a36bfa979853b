"""Participant pages: landing, consent, level, trials, questionnaire, finish.

Nothing a participant receives names a condition: signals are opaque per-trial keys
and stimuli are fetched through per-participant random tokens.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, RawPostDataException
from django.http.response import HttpResponseBase
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_http_methods

from .. import errors, headphone, i18n, paradigms, rules
from ..http import blinded_error, serve_blinded_bytes, serve_blinded_file
from ..inputs import json_problem, text_problem
from ..models import Condition, Experiment, Participant, Stimulus, StimulusToken, training_names
from ..ratelimit import ratelimit
from ..services import screening as headphone_check
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


def _json_body(request: HttpRequest, limit: int):
    """The request's JSON body, or a 400 (413 above ``limit`` bytes) response saying why not."""
    if request.content_type != "application/json":
        return _error(gettext("send JSON (Content-Type: application/json)"))
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _error(gettext("the request body is over %(size)s kB") % {"size": limit // 1024}, status=413)
    try:
        raw = request.body
    except RawPostDataException:
        return _error(gettext("send JSON (Content-Type: application/json)"))
    if len(raw) > limit:
        return _error(gettext("the request body is over %(size)s kB") % {"size": limit // 1024}, status=413)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError, and integers past Python's digit limit
        return _error(gettext("the request body is not valid JSON"))
    except RecursionError:
        return _error(gettext("the request body is nested too deeply"))
    problem = json_problem(data)
    return _error(problem) if problem else data


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
    # The researcher's pilot link: every start is a new pilot session, kept out of the data.
    pilot_code = request.GET.get("pilot", request.POST.get("pilot", ""))
    pilot = bool(pilot_code)
    unusable = next((f"{k}: {text_problem(v)}" for k, v in prolific.items() if text_problem(v)), "")
    if unusable:
        return render(
            request, "webmushra/participant/closed.html", {"experiment": experiment, "reason": unusable}, status=400
        )
    if pilot and not sessions.pilot_link_valid(experiment, pilot_code):
        return render(
            request,
            "webmushra/participant/closed.html",
            {
                "experiment": experiment,
                "reason": gettext("this pilot link is not valid; copy it again from the experiment page"),
            },
            status=400,
        )
    # The same browser resumes its participant (a finished or screened-out one cannot start
    # again here); another Prolific ID in the link is another person.
    remembered = None if pilot else _remembered(request, experiment)
    if remembered is not None and prolific["PROLIFIC_PID"] in ("", remembered.prolific_pid):
        return redirect(_where(remembered))
    if request.method == "POST":
        try:
            participant = sessions.start_participant(
                experiment=experiment,
                prolific_pid=prolific["PROLIFIC_PID"],
                study_id=prolific["STUDY_ID"],
                session_id=prolific["SESSION_ID"],
                user_agent=request.headers.get("User-Agent", ""),
                pilot=pilot,
            )
        except errors.ServiceError as exc:
            return render(
                request, "webmushra/participant/closed.html", {"experiment": experiment, "reason": str(exc)}, status=409
            )
        response = redirect(_where(participant))
        if pilot:
            return response
        response.set_signed_cookie(
            RESUME_COOKIE,
            participant.token,
            salt=_resume_salt(experiment),
            max_age=RESUME_COOKIE_DAYS * 86400,
            path=reverse("participant:landing", args=[experiment.public_token]),
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=True,
            samesite="Lax",
        )
        return response
    return render(
        request,
        "webmushra/participant/landing.html",
        {"experiment": experiment, "prolific": prolific, "pilot": pilot_code if pilot else ""},
    )


#: The signed cookie that lets the study link resume its participant in the same browser. Its
#: path is the experiment's landing URL, so each experiment has its own; it holds the
#: participant's token (already in every URL of the session), never a condition.
RESUME_COOKIE = "wm_participant"
RESUME_COOKIE_DAYS = 30


def _resume_salt(experiment: Experiment) -> str:
    return f"webmushra.participant.{experiment.public_token}"


def _remembered(request: HttpRequest, experiment: Experiment) -> Participant | None:
    """The participant this browser started on this experiment, if its signed cookie is valid."""
    token = request.get_signed_cookie(
        RESUME_COOKIE, default=None, salt=_resume_salt(experiment), max_age=RESUME_COOKIE_DAYS * 86400
    )
    if not token:
        return None
    return Participant.objects.filter(token=token, experiment=experiment).select_related("experiment").first()


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
            gain = float(request.POST.get("gain_db", ""))
            participant = sessions.set_level(participant=participant, gain_db=gain)
        except (ValueError, errors.ServiceError) as exc:
            reason = str(exc) if isinstance(exc, errors.ServiceError) else gettext("gain_db: expected a number of dB")
            return render(
                request,
                "webmushra/participant/level.html",
                {"participant": participant, "error": reason, **_level_context(participant)},
                status=400,
            )
        return redirect(_where(participant))
    return render(
        request, "webmushra/participant/level.html", {"participant": participant, **_level_context(participant)}
    )


def _level_context(participant: Participant, gain_db: float = 0.0) -> dict:
    """The level page's calibration signal is the first trial's open reference (its own URL,
    never a signal's): program material at the level every stimulus was rendered to (the
    experiment's loudness target when set), so the volume chosen for it suits the test."""
    url = reverse("participant:reference", args=[participant.token, 1]) if participant.plan else None
    low, high = rules.LEVEL_GAIN_DB
    return {
        "level_data": {"url": url, "min_db": low, "max_db": high, "gain_db": gain_db},
        "experiment": participant.experiment,
    }


@require_http_methods(["GET", "POST"])
@ratelimit("save", methods=["POST"], as_json=True)
def screening(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant(token)
    if request.method == "POST":
        body = _json_body(request, rules.MAX_SCREENING_BYTES)
        if isinstance(body, JsonResponse):
            return body
        if participant.stage == Participant.Stage.SCREENING:
            try:
                participant = headphone_check.score_headphone_check(
                    participant=participant, answers=body.get("answers") if isinstance(body, dict) else None
                )
            except errors.ServiceError as exc:
                return _error(str(exc))
        return JsonResponse({"saved": True, "next_url": _where(participant)})
    if participant.stage != Participant.Stage.SCREENING:
        return redirect(_where(participant))
    cfg = rules.headphone_settings(participant.experiment)
    # The page gets opaque audio URLs only: the server makes each interval, keeps the answers,
    # and records every fetch (an answer to sounds never fetched counts as wrong).
    headphone_data = {
        "post_url": reverse("participant:screening", args=[participant.token]),
        "csrf_token": get_token(request),
        "trials": [
            {
                "test": t["test"],
                "urls": [reverse("participant:screening_audio", args=[participant.token, k]) for k in t["audio"]],
            }
            for t in headphone_check.headphone_trials(participant=participant)
        ],
        "intervals": headphone.INTERVALS,
        "gap_s": headphone.GAP_S,
        "max_plays": int(cfg.get("max_plays", 1)),
        "gain_db": participant.level.get("gain_db", 0.0),
    }
    return render(
        request,
        "webmushra/participant/screening.html",
        {"participant": participant, "experiment": participant.experiment, "headphone_data": headphone_data},
    )


@ratelimit("media")
def screening_audio(request: HttpRequest, token: str, key: str) -> HttpResponseBase:
    """One interval of a headphone-check trial, made on request; the fetch is recorded."""
    data = headphone_check.headphone_audio(token=token, key=key)
    if data is None:
        raise Http404("no such sound")
    return serve_blinded_bytes(request, data)


def _progress(participant: Participant, index: int) -> dict:
    """How far through the plan the participant is, and about how long the rest of it takes: the
    median time on page of the trials they saved so far, else the experiment's estimate shared
    over its trials."""
    pages = [
        t.get("time_on_page_ms") if isinstance(t, dict) else None
        for t in participant.responses.values_list("telemetry", flat=True)
    ]
    seconds = sorted(p / 1000 for p in pages if isinstance(p, (int, float)) and 0 < p < 3_600_000)
    if seconds:
        per_trial = seconds[len(seconds) // 2]
    else:
        per_trial = participant.experiment.estimated_minutes * 60 / max(1, len(participant.plan))
    left = per_trial * (len(participant.plan) - index)
    return {
        "stage": "training" if participant.plan[index].get("training") else "test",
        "position": index + 1,
        "of": len(participant.plan),
        "seconds_per_trial": round(per_trial),
        "minutes_left": max(1, round(left / 60)),
    }


def trial_data(request: HttpRequest, participant: Participant, index: int) -> dict:
    """The JSON the player needs for one trial (no condition names unless training)."""
    entry = participant.plan[index]
    # condition id -> this participant's token for the condition's stimulus of this trial's excerpt
    tokens = sessions.key_tokens(participant, entry, "token")
    keys = sessions.signal_keys(entry)
    paradigm = paradigms.paradigm_of(entry)
    block = paradigms.block_of(participant.experiment.config, entry)
    tests = [e for e in participant.plan if not e.get("training")]
    number = sum(1 for e in participant.plan[: index + 1] if e.get("training") == entry.get("training"))
    total = len(tests) if not entry.get("training") else len(participant.plan) - len(tests)
    data = {
        "trial": {
            "number": number,
            "total": total,
            "training": bool(entry.get("training")),
            "title": (
                gettext("Training %(number)s of %(total)s")
                if entry.get("training")
                else gettext("Trial %(number)s of %(total)s")
            )
            % {"number": number, "total": total},
        },
        # The block's paradigm (webmushra.paradigms) and the labelled points of its answer scale.
        "paradigm": paradigm,
        "scale": paradigms.scale(paradigm, i18n.block_scale(block)),
        # The open reference is served under its own token, distinct from the hidden one.
        "reference": (
            {"url": reverse("participant:reference", args=[participant.token, index + 1])}
            if paradigm in paradigms.WITH_OPEN_REFERENCE
            else None
        ),
        "signals": [{"key": k, "url": reverse("participant:stimulus", args=[tokens[k][0]])} for k in keys],
        # The page's rules and the signal cap, from rules.py only: the player keeps no defaults.
        "rules": paradigms.rules_for(paradigm, rules.player_rules(participant.experiment)),
        "max_signals": rules.MAX_SIGNALS_PER_TRIAL,
        "save_url": reverse("participant:trial", args=[participant.token, index + 1]),
        "idempotency_key": entry["key"],
        "csrf_token": get_token(request),
        "instructions": i18n.text(participant.experiment, "instructions"),
        # The block's own instructions (its experiment's ``trial_instructions``), on every trial page.
        "block_instructions": i18n.block_instructions(participant.experiment, block),
        # The comment box: off, optional or required on test trials (never on training trials).
        "comments": "off" if entry.get("training") else rules.trial_comments(participant.experiment.config),
        "comment_max": rules.MAX_COMMENT_CHARS,
        "gain_db": participant.level.get("gain_db", 0.0),
        "progress": _progress(participant, index),
    }
    if entry.get("training"):
        # Display names the researcher chose (or neutral defaults), never the analysis labels.
        names = training_names(Condition.objects.filter(experiment=participant.experiment))
        data["labels"] = {k: names[cid] for k, cid in keys.items()}
    return data


@require_http_methods(["GET", "POST"])
@ratelimit("save", methods=["POST"], as_json=True)
def trial(request: HttpRequest, token: str, number: int) -> HttpResponse:
    index = number - 1
    if request.method == "POST":
        body = _json_body(request, rules.MAX_SAVE_BYTES)
        if isinstance(body, JsonResponse):
            return body
        if not isinstance(body, dict):
            return _error(gettext("the request body must be a JSON object"))
        try:
            # The participant is read once, locked, inside the save's transaction.
            result = sessions.submit_trial(
                token=token,
                index=index,
                idempotency_key=body.get("idempotency_key"),
                ratings=body.get("ratings"),
                telemetry=body.get("telemetry") if isinstance(body.get("telemetry"), dict) else {},
                comment=body.get("comment"),
                answer=body.get("answer"),
            )
        except Participant.DoesNotExist:
            raise Http404("no such participant") from None
        except errors.TrialNotFound:
            raise Http404("no such trial") from None
        except errors.ConflictError as exc:
            return _error(str(exc), status=409)
        except errors.RuleBroken as exc:
            # Nothing was stored; the answer names the rule the trial broke.
            return JsonResponse({"error": str(exc), "rule": exc.rule}, status=400)
        except errors.FieldError as exc:
            return JsonResponse({"error": str(exc), "field": exc.field}, status=400)
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


def _gone(stage: str, experiment_status: str) -> str:
    """Why a participant's audio URLs no longer answer (empty: they do)."""
    if stage in Participant.FINISHED_STAGES:
        return "this session has ended"
    if experiment_status != Experiment.Status.OPEN:
        return "this experiment is closed"
    return ""


@ratelimit("media")
def reference(request: HttpRequest, token: str, number: int) -> HttpResponseBase:
    """The open reference of a trial (same audio as the hidden reference, another URL).

    Its fetches are not recorded: the hidden reference's token counts only its own URL.
    """
    participant = Participant.objects.select_related("experiment").filter(token=token).first()
    if participant is None:
        return blinded_error(404, "no such participant")
    gone = _gone(participant.stage, participant.experiment.status)
    if gone:
        return blinded_error(410, gone)
    index = number - 1
    if not (0 <= index < len(participant.plan)):
        return blinded_error(404, "no such trial")
    path = Stimulus.objects.filter(
        excerpt__trials__pk=participant.plan[index]["trial"], condition__kind="hidden_reference"
    ).values_list("file", flat=True)[:1]
    if not path:
        return blinded_error(404, "no reference for this trial")
    max_age = rules.stimulus_cache_seconds(participant.experiment.estimated_minutes)
    return serve_blinded_file(request, path[0], max_age=max_age)


@ratelimit("media")
def stimulus(request: HttpRequest, token: str) -> HttpResponseBase:
    # The most frequent request of a session: one indexed lookup (file, the participant's stage,
    # the experiment's state) and, for a delivery, one UPDATE recording it.
    found = StimulusToken.objects.filter(token=token).values_list(
        "pk",
        "file",
        "stimulus__file",
        "participant__stage",
        "participant__experiment__status",
        "participant__experiment__estimated_minutes",
    )[:1]
    if not found:
        return blinded_error(404, "no such stimulus")
    token_id, own, path, stage, experiment_status, minutes = found[0]
    path = own or path  # a trapping question's audio, else the stimulus
    gone = _gone(stage, experiment_status)
    if gone:
        return blinded_error(410, gone)
    response = serve_blinded_file(request, path, max_age=rules.stimulus_cache_seconds(minutes))
    if request.method == "GET" and response.status_code in (200, 206):
        sessions.record_stimulus_fetch(token_id=token_id)
    return response


@require_http_methods(["GET", "POST"])
@ratelimit("save", methods=["POST"])
def questionnaire(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant(token)
    if participant.stage != Participant.Stage.QUESTIONNAIRE:
        return redirect(_where(participant))
    fields = i18n.questionnaire(participant.experiment)  # the labels in the participant's language
    if request.method == "POST":
        answers = {f["name"]: request.POST.get(f["name"], "").strip()[:2000] for f in fields}
        problems = {f["name"]: rules.questionnaire_problem(f, answers[f["name"]]) for f in fields}
        problems = {name: why for name, why in problems.items() if why}
        if problems:
            missing = "; ".join(f"{f['label']}{problems[f['name']]}" for f in fields if f["name"] in problems)
            # Sent back with every answer kept, the ones to fix marked.
            for f in fields:
                f["value"] = answers[f["name"]]
                f["missing"] = f["name"] in problems
            return render(
                request,
                "webmushra/participant/questionnaire.html",
                {
                    "participant": participant,
                    "experiment": participant.experiment,
                    "fields": fields,
                    "error": gettext("Please answer: %(questions)s") % {"questions": missing},
                },
                status=400,
            )
        participant = sessions.submit_questionnaire(participant=participant, answers=answers)
        return redirect(_where(participant))
    return render(
        request,
        "webmushra/participant/questionnaire.html",
        {"participant": participant, "experiment": participant.experiment, "fields": fields},
    )


def done(request: HttpRequest, token: str) -> HttpResponse:
    participant = _participant(token)
    if participant.stage not in (
        Participant.Stage.COMPLETED,
        Participant.Stage.SCREENED_OUT,
        Participant.Stage.DECLINED,
    ):
        return redirect(_where(participant))
    if participant.stage != Participant.Stage.DECLINED and not (participant.exit_code or participant.exit_url):
        participant = sessions.record_exit(participant=participant)  # finished before exits were recorded
    # Where the participant goes is what was recorded when they reached the end.
    return render(
        request,
        "webmushra/participant/done.html",
        {"participant": participant, "experiment": participant.experiment, "redirect_url": participant.exit_url},
    )
