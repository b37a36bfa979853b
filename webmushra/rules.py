"""The rules and settings an experiment can set, their defaults and their validation: one place.

The settings form, the services, the participant pages and the player (through its trial
JSON) all read these definitions; nothing else holds a copy.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.utils.translation import gettext, gettext_noop

from evaluation.settings import Settings as _AnalysisSettings

from .errors import FieldError, RuleBroken, ServiceError
from .inputs import json_problem
from .paradigms import blocks, clean_blocks

if TYPE_CHECKING:
    from .models import Experiment


#: The MUSHRA page's rules and their defaults (one place; the settings page and the player read it).
RULE_DEFAULTS: dict[str, bool | float] = {
    "must_play_all": True,  # every signal must be played before the trial can be submitted
    "only_playing_slider_moves": True,  # a slider moves only while its signal is the one playing
    "require_one_100": True,  # at least one signal rated 100 (the hidden reference, BS.1534-3 Attachment 1)
    "loop_min_seconds": 0.5,
    # With must_play_all: every signal heard at least this long (s; 0: any playback counts).
    "min_play_seconds": 1.0,
    # At least this long on a trial page before it can be submitted (s; 0: no minimum).
    "min_trial_seconds": 5.0,
}

#: Upper bounds of the numeric rules (validate_config): a typo must not lock participants out.
RULE_MAXIMA: dict[str, float] = {"loop_min_seconds": 60.0, "min_play_seconds": 60.0, "min_trial_seconds": 600.0}

#: BS.1534-3 §5.3: at most 12 signals (incl. hidden reference and anchors) per trial; the player
#: receives it with each trial (``max_signals``).
MAX_SIGNALS_PER_TRIAL = 12

#: A participant's browser may keep a stimulus for the session, not longer: a reload does not
#: fetch the audio again. The lifetime is the experiment's estimated duration times the factor,
#: within the bounds (``Cache-Control: private, max-age=N``; the token stops working, 410, when the
#: participant finishes or the experiment closes).
STIMULUS_CACHE_FACTOR = 2
STIMULUS_CACHE_MIN_S = 15 * 60
STIMULUS_CACHE_MAX_S = 3 * 3600


def stimulus_cache_seconds(estimated_minutes: int | None) -> int:
    """Seconds a participant's browser may cache a stimulus (see ``STIMULUS_CACHE_FACTOR``)."""
    seconds = STIMULUS_CACHE_FACTOR * 60 * (estimated_minutes or 0)
    return int(min(STIMULUS_CACHE_MAX_S, max(STIMULUS_CACHE_MIN_S, seconds)))


#: The participant flow's switches and their defaults: the level page (before the headphone
#: check, so the check is heard at the level set), then a training trial.
FLOW_DEFAULTS: dict[str, bool] = {"training": True, "level_setting": True}

#: The gain a participant may set on the level page (dB); every later sound is played with it.
LEVEL_GAIN_DB: tuple[float, float] = (-40.0, 12.0)

#: Prolific: the codes a participant is sent back with, and the URLs (the code goes in ``cc``,
#: as in https://app.prolific.com/submissions/complete?cc=CODE).
EXIT_CODE_MAX = 64
EXIT_URL_MAX = 400
_EXIT_CODE = re.compile(r"^[A-Za-z0-9_-]*$")


def exit_link(config: dict, outcome: str, completion_code: str = "") -> tuple[str, str]:
    """(code, URL) a participant is sent to at the end: ``completed`` -> the completion code
    and URL; ``screened_out`` -> the screen-out code and URL (the completion URL with the
    screen-out code when only a code is set). The code replaces any ``cc`` in the URL."""
    if outcome == "completed":
        code, url = completion_code, str(config.get("completion_url") or "")
    elif outcome == "screened_out":
        code = str(config.get("screenout_code") or "")
        url = str(config.get("screenout_url") or (config.get("completion_url") if code else "") or "")
    else:
        raise ValueError(f"no exit for {outcome!r}")
    if url and code:
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "cc"] + [("cc", code)]
        url = urlunsplit(parts._replace(query=urlencode(query)))
    return code, url


def _validate_exit(cfg: dict) -> None:
    for key in ("completion_code", "screenout_code"):
        code = cfg.get(key)
        if code in (None, ""):
            continue
        if not isinstance(code, str) or len(code) > EXIT_CODE_MAX or not _EXIT_CODE.match(code):
            raise ServiceError(f"{key}: at most {EXIT_CODE_MAX} letters, digits, - or _")
    if cfg.get("screenout_code") and cfg.get("screenout_code") == cfg.get("completion_code"):
        raise ServiceError("screenout_code: must differ from completion_code (it would pay the screened-out)")
    for key in ("completion_url", "screenout_url"):
        url = cfg.get(key)
        if url in (None, ""):
            continue
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("https", "http") or not parts.netloc or re.search(r"\s", url):
            raise ServiceError(f"{key}: must be a web address starting with https://")
        if len(url) > EXIT_URL_MAX:
            raise ServiceError(f"{key}: at most {EXIT_URL_MAX} characters")


def flow(experiment: Experiment, switch: str) -> bool:
    """Whether a step of the participant flow (``FLOW_DEFAULTS``) is on for this experiment."""
    return bool(experiment.config.get(switch, FLOW_DEFAULTS[switch]))


#: Defaults of the headphone check (Woods et al. 2017; Milne et al. 2021 use 6 trials, pass at 5).
HEADPHONE_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "tests": ["antiphase", "huggins"],
    "trials_per_test": 6,
    "pass_threshold": 5 / 6,
    "require": "all",
}


def headphone_settings(experiment: Experiment) -> dict[str, Any]:
    """The experiment's headphone-check settings, defaults filled in."""
    return HEADPHONE_DEFAULTS | (experiment.config.get("headphone_check") or {})


#: The questionnaire an experiment gets when its config names none: one optional comment.
DEFAULT_QUESTIONNAIRE: list[dict[str, Any]] = [
    {"name": "comment", "label": gettext_noop("Any comments?"), "type": "textarea", "options": [], "required": False}
]


def questionnaire_fields(experiment: Experiment) -> list[dict[str, Any]]:
    """The questionnaire participants answer (an empty list: none, straight to completion)."""
    fields = experiment.config.get("questionnaire")
    return [dict(f) for f in (DEFAULT_QUESTIONNAIRE if fields is None else fields)]


def player_rules(experiment: Experiment) -> dict[str, bool | float]:
    """The MUSHRA page's rules for this experiment, defaults filled in."""
    return RULE_DEFAULTS | (experiment.config.get("rules") or {})


# --------------------------------------------------------------------------- the server referees


#: What the player logs (trial.js ``Player.log``), ``t_ms`` counted from the page's start:
#: ``play`` (a signal, or ``ref``, starts playing and becomes the selected one), ``stop`` (pause
#: or stop) and ``move`` (a signal's slider set to ``value``).
EVENT_TYPES = ("play", "stop", "move")
#: The most events one trial may log (an hour of dragging logs far fewer).
MAX_EVENTS = 20_000
#: The largest save a participant's page may send (a trial with its log; the headphone answers):
#: larger bodies get 413 and nothing is stored.
MAX_SAVE_BYTES = 2 * 1024 * 1024
MAX_SCREENING_BYTES = 64 * 1024
#: Slack (s) allowed between the page's clock and the server's over one trial (network, start-up).
CLOCK_SLACK_S = 1.0


@dataclass(frozen=True)
class Delivery:
    """What the server itself saw of one trial, to check the page's telemetry against.

    ``fetches``: per signal key, how often this participant fetched that signal's audio;
    ``since_first_fetch_s``: seconds since the first of those fetches (None: none);
    ``since_previous_step_s``: seconds since the participant finished the step before this
    trial, longer than the page can have been open (None: unknown).
    """

    fetches: dict[str, int]
    since_first_fetch_s: float | None = None
    since_previous_step_s: float | None = None


@dataclass(frozen=True)
class Event:
    """One entry of the page's interaction log (``EVENT_TYPES``)."""

    t_ms: float
    type: str
    key: str
    value: float | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)  # an int past float's range: OverflowError
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def telemetry_events(telemetry: dict, keys: list[str]) -> list[Event]:
    """The page's interaction log, checked (types, signal keys, times in order, slider values)."""
    raw = telemetry.get("events", [])
    if not isinstance(raw, list):
        raise ServiceError("telemetry: events must be a list")
    if len(raw) > MAX_EVENTS:
        raise ServiceError(f"telemetry: more than {MAX_EVENTS} events")
    known = set(keys) | {"ref"}
    events: list[Event] = []
    last = 0.0
    for i, e in enumerate(raw, start=1):
        if not isinstance(e, dict):
            raise ServiceError(f"telemetry: event {i} is not an object")
        t = _number(e.get("t_ms"))
        kind, key = e.get("type"), e.get("key")
        if t is None or t < 0:
            raise ServiceError(f"telemetry: event {i} has no time (t_ms)")
        if kind not in EVENT_TYPES:
            raise ServiceError(f"telemetry: event {i} has type {kind!r}; expected one of {', '.join(EVENT_TYPES)}")
        if key not in known or (kind == "move" and key == "ref"):
            raise ServiceError(f"telemetry: event {i} names no signal of this trial")
        value = None
        if kind == "move":
            value = _number(e.get("value"))
            if value is None or not 0 <= value <= 100:
                raise ServiceError(f"telemetry: event {i} sets a slider to no value in 0..100")
        if t < last:
            raise ServiceError(f"telemetry: event {i} is earlier than the one before it")
        last = t
        events.append(Event(t_ms=t, type=kind, key=key, value=value))
    return events


def listen_seconds(telemetry: dict, keys: list[str]) -> dict[str, float]:
    """Seconds each signal was heard, as the page counted them (``signals[key].listen_ms``)."""
    signals = telemetry.get("signals", {})
    if not isinstance(signals, dict):
        raise ServiceError("telemetry: signals must be an object")
    out: dict[str, float] = {}
    for n, key in enumerate(keys, start=1):
        entry = signals.get(key, {})
        ms = _number(entry.get("listen_ms", 0)) if isinstance(entry, dict) else None
        if ms is None or ms < 0:
            raise ServiceError(f"telemetry: the listening time of signal {n} is not a number")
        out[key] = ms / 1000
    return out


def page_seconds(telemetry: dict) -> float | None:
    """Seconds on the trial page as the page counted them (``time_on_page_ms``); None: not sent."""
    if telemetry.get("time_on_page_ms") is None:
        return None
    ms = _number(telemetry["time_on_page_ms"])
    if ms is None or ms < 0:
        raise ServiceError("telemetry: time_on_page_ms is not a number")
    return ms / 1000


def check_trial(
    rules: dict[str, Any], keys: list[str], scores: dict[str, int], telemetry: dict, delivery: Delivery
) -> None:
    """Referee one submitted trial: every rule the experiment enables is checked against the
    page's interaction log and the server's own record (``Delivery``); a switched-off rule is
    not. Raises ``RuleBroken`` naming the first rule broken, ``ServiceError`` for a malformed
    log. ``keys`` are the trial's signal keys in page order (signal 1, 2, ...).

    The rules are the player's (BS.1534-3 §5.3 lets the assessor switch freely between the
    signals; the instructions of its Attachment 1 ask for at least one signal, the hidden
    reference, at 100).
    """
    number = {k: n for n, k in enumerate(keys, start=1)}
    events = telemetry_events(telemetry, keys)
    listened = listen_seconds(telemetry, keys)

    if rules.get("require_one_100") and not any(v == 100 for v in scores.values()):
        raise RuleBroken("require_one_100", gettext("no signal was rated 100 (the hidden reference should be)"))

    if rules.get("must_play_all"):
        played = {e.key for e in events if e.type == "play"}
        for key in keys:
            if key not in played:
                raise RuleBroken(
                    "must_play_all", gettext("signal %(number)s was never played") % {"number": number[key]}
                )
            if delivery.fetches.get(key, 0) < 1:
                raise RuleBroken(
                    "must_play_all",
                    gettext("signal %(number)s was reported as played, but its audio was never fetched")
                    % {"number": number[key]},
                )
        least = float(rules.get("min_play_seconds") or 0)
        if least > 0:
            for key in keys:
                if listened[key] < least:
                    raise RuleBroken(
                        "min_play_seconds",
                        gettext("signal %(number)s was heard for %(heard)s s; at least %(least)s s required")
                        % {"number": number[key], "heard": f"{listened[key]:.1f}", "least": f"{least:g}"},
                    )
            # One signal plays at a time: all the listening fits between the first fetch and now.
            total = sum(listened.values())
            since = delivery.since_first_fetch_s
            if since is not None and total > since + CLOCK_SLACK_S:
                raise RuleBroken(
                    "min_play_seconds",
                    gettext("%(total)s s of listening reported, but the audio was first fetched %(since)s s ago")
                    % {"total": f"{total:.1f}", "since": f"{since:.1f}"},
                )

    if rules.get("only_playing_slider_moves"):
        selected: str | None = None
        heard: set[str] = set()
        last_value: dict[str, float] = {}
        for e in events:
            if e.type == "play":
                selected = e.key
                heard.add(e.key)
            elif e.type == "move":
                if e.key not in heard:
                    raise RuleBroken(
                        "only_playing_slider_moves",
                        gettext("the slider of signal %(number)s moved before it was played")
                        % {"number": number[e.key]},
                    )
                if selected != e.key:
                    other = (
                        gettext("the reference")
                        if selected == "ref"
                        else gettext("signal %(number)s") % {"number": number.get(selected or "", "?")}
                    )
                    raise RuleBroken(
                        "only_playing_slider_moves",
                        gettext("the slider of signal %(number)s moved while %(other)s was selected")
                        % {"number": number[e.key], "other": other},
                    )
                last_value[e.key] = e.value if e.value is not None else -1
        for key in keys:
            if key not in last_value:
                raise RuleBroken(
                    "only_playing_slider_moves",
                    gettext("signal %(number)s was rated without its slider being moved") % {"number": number[key]},
                )
            if round(last_value[key]) != scores[key]:
                raise RuleBroken(
                    "only_playing_slider_moves",
                    gettext("signal %(number)s was rated %(score)s, but its slider was last set to %(value)s")
                    % {"number": number[key], "score": scores[key], "value": round(last_value[key])},
                )

    least = float(rules.get("min_trial_seconds") or 0)
    if least > 0:
        seconds = page_seconds(telemetry)
        if seconds is None or seconds < least:
            message = (
                gettext("no time on the trial page; at least %(least)s s required")
                if seconds is None
                else gettext("%(seconds)s s on the trial page; at least %(least)s s required")
            )
            raise RuleBroken("min_trial_seconds", message % {"seconds": f"{seconds or 0:.1f}", "least": f"{least:g}"})
        since = delivery.since_previous_step_s
        if since is not None and since + CLOCK_SLACK_S < least:
            raise RuleBroken(
                "min_trial_seconds",
                gettext(
                    "the previous step was finished only %(since)s s ago; at least %(least)s s on the trial required"
                )
                % {"since": f"{since:.1f}", "least": f"{least:g}"},
            )


# --------------------------------------------------------------------------- quality control


#: Quality-control flags (webmushra/services/quality.py): computed on every saved test trial,
#: shown on the monitor and exported; a flag informs the researcher and rejects nothing.
FLAGS: dict[str, str] = {
    "too_fast": "less time on the trial page than the threshold",
    "no_playback": "signal(s) rated without being heard",
    "straight_lining": "every signal given the same rating",
    "reference_not_found": "the hidden reference rated below the threshold",
    "catch_failed": "a catch trial's duplicate of the reference rated below the threshold",
    "gold_failed": "a gold question (ITU-T P.808) answered more than its tolerance from the known category",
    "trap_failed": "a trapping question (ITU-T P.808) not answered with the category its message asked for",
}
#: The flags' short names (monitor, report).
FLAG_LABELS: dict[str, str] = {
    "too_fast": "too fast",
    "no_playback": "no playback",
    "straight_lining": "straight-lining",
    "reference_not_found": "reference not found",
    "catch_failed": "catch trial failed",
    "gold_failed": "gold question failed",
    "trap_failed": "trapping question failed",
}

#: The analysis's defaults (evaluation/settings.py): its post-screening reference threshold.
SCREENING = _AnalysisSettings()

#: Thresholds of the flags; ``reference_min`` defaults to the post-screening reference
#: threshold of the analysis (BS.1534-3 §4.1.2: 90), set under ``config["analysis"]``.
QUALITY_DEFAULTS: dict[str, float] = {
    "too_fast_seconds": 15.0,
    "reference_min": SCREENING.reference_threshold,
    #: A catch trial's duplicate of the reference is held to the hidden reference's standard
    #: (BS.1534-3 §4.1.2: rated 90 or more).
    "catch_min": SCREENING.reference_threshold,
}
QUALITY_MAXIMA: dict[str, float] = {"too_fast_seconds": 3600.0, "reference_min": 100.0, "catch_min": 100.0}
#: The most catch trials one participant is given (``config["catch_trials"]``).
MAX_CATCH_TRIALS = 10


def catch_trial_count(config: dict[str, Any]) -> int:
    """How many catch trials each participant gets (0: none), as stored by ``validate_config``."""
    return int(config.get("catch_trials") or 0)


#: The most repeated trials one participant is given (``config["repeat_trials"]``): each presents
#: one of their own test trials again later, for their test-retest consistency (BS.1534-3
#: listener reliability; ``evaluation.reliability``).
MAX_REPEAT_TRIALS = 10


def repeat_trial_count(config: dict[str, Any]) -> int:
    """How many repeated trials each participant gets (0: none), as stored by ``validate_config``."""
    return int(config.get("repeat_trials") or 0)


#: The comment box of a test trial page (``config["trial_comments"]``): none, optional, or a
#: comment required before the trial is saved (the server refuses a save without one).
TRIAL_COMMENT_MODES = ("off", "optional", "required")
#: The longest comment on one trial (characters); a longer one is refused, nothing stored.
MAX_COMMENT_CHARS = 2000
#: The longest instructions shown on every trial page of a block (``config["trial_instructions"]``).
MAX_TRIAL_INSTRUCTIONS_CHARS = 2000


def trial_comments(config: dict[str, Any]) -> str:
    """The comment box of test trials: ``off``, ``optional`` or ``required``."""
    mode = config.get("trial_comments") or "off"
    return mode if mode in TRIAL_COMMENT_MODES else "off"


def clean_comment(mode: str, comment: Any) -> str:
    """A trial's comment checked against the experiment's ``mode``: the text (stripped), or
    ``FieldError`` naming the field (missing when required, too long, not text, NUL), in the
    participant's language."""
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise FieldError("comment", gettext("expected a text"))
    comment = comment.strip()
    if mode == "off":
        if comment:
            raise FieldError("comment", gettext("this trial takes no comment"))
        return ""
    if len(comment) > MAX_COMMENT_CHARS:
        raise FieldError(
            "comment",
            gettext("at most %(limit)s characters (got %(length)s)")
            % {"limit": MAX_COMMENT_CHARS, "length": len(comment)},
        )
    if "\x00" in comment:  # no database column holds it (PostgreSQL refuses NUL in text)
        raise FieldError("comment", gettext("remove the NUL character"))
    if mode == "required" and not comment:
        raise FieldError("comment", gettext("a comment on this trial is required"))
    return comment


def validate_quality(quality: Any) -> dict[str, float]:
    """Check the flag thresholds (``config["quality"]``); return them normalised."""
    if not isinstance(quality, dict):
        raise ServiceError("quality: expected an object")
    unknown = sorted(set(quality) - set(QUALITY_DEFAULTS))
    if unknown:
        raise ServiceError(f"quality: {unknown[0]} is not a quality-control setting")
    out: dict[str, float] = {}
    for k, v in quality.items():
        number = _number(v)
        if number is None or not 0.0 <= number <= QUALITY_MAXIMA[k]:
            raise ServiceError(f"quality: {k} must be a number between 0 and {QUALITY_MAXIMA[k]:g}")
        out[k] = number
    return out


def quality_settings(experiment: Experiment) -> dict[str, float]:
    """The experiment's flag thresholds, defaults filled in (``reference_min`` follows the
    analysis's reference threshold when only that is set)."""
    analysis = experiment.config.get("analysis") or {}
    base = dict(QUALITY_DEFAULTS)
    if analysis.get("reference_threshold") is not None:
        base["reference_min"] = float(analysis["reference_threshold"])
    return base | (experiment.config.get("quality") or {})


#: Questionnaire field types the participant pages can render.
QUESTION_TYPES = ("text", "number", "textarea", "select")
#: Experiment fields a researcher edits on the settings page (besides ``config``).
SETTINGS_FIELDS = ("title", "description", "instructions", "consent_text", "estimated_minutes", "loudness_target_lufs")
HEADPHONE_TESTS = ("antiphase", "huggins")


def questionnaire_problem(field: dict[str, Any], answer: str) -> str:
    """What is wrong with one questionnaire answer ("" when nothing): missing when required, a
    choice that is not among the options, a number that is not a number."""
    # In the participant's language: the questionnaire page shows them.
    if not answer:
        return gettext(" (required)") if field.get("required") else ""
    if "\x00" in answer:  # no database column holds it (PostgreSQL refuses NUL in text)
        return gettext(" (remove the NUL character)")
    if field.get("type") == "select" and answer not in field.get("options", []):
        return gettext(" (choose one of the options)")
    if field.get("type") == "number":
        try:
            value = float(answer)
        except ValueError:
            return gettext(" (a number)")
        if not math.isfinite(value) or abs(value) > 1e9:
            return gettext(" (a number)")
    return ""


#: Config keys that may change while the experiment is open: where participants are sent at the
#: end, how the analysis and quality flags read the data, and the translations of the
#: researcher's texts (the English texts, fields of the experiment, may change too, and so may the
#: trial pages' instructions). Everything else shapes what participants do, so it stays as they
#: started with it.
OPEN_CHANGEABLE = frozenset(
    {
        "completion_url",
        "completion_code",
        "screenout_url",
        "screenout_code",
        "analysis",
        "quality",
        "translations",
        "trial_instructions",
    }
)


def participant_facing(config: dict[str, Any]) -> dict[str, Any]:
    """The settings participants experience, defaults filled in (to tell a real change apart)."""
    out = {k: v for k, v in config.items() if k not in OPEN_CHANGEABLE}
    out["rules"] = RULE_DEFAULTS | (config.get("rules") or {})
    out["headphone_check"] = HEADPHONE_DEFAULTS | (config.get("headphone_check") or {})
    for key, default in FLOW_DEFAULTS.items():
        out[key] = bool(config.get(key, default))
    questions = config.get("questionnaire")
    out["questionnaire"] = DEFAULT_QUESTIONNAIRE if questions is None else questions
    out["trial_subset_size"] = int(config.get("trial_subset_size") or 0)
    out["catch_trials"] = catch_trial_count(config)
    out["repeat_trials"] = repeat_trial_count(config)
    out["trial_comments"] = trial_comments(config)
    out["blocks"] = blocks(config)
    return out


def validate_questionnaire(fields: Any) -> list[dict]:
    """Check questionnaire fields ({name, label, type, options, required}); return them normalised."""
    if not isinstance(fields, list):
        raise ServiceError("questionnaire: expected a list of fields")
    seen: set[str] = set()
    out: list[dict] = []
    for i, field in enumerate(fields, start=1):
        if not isinstance(field, dict):
            raise ServiceError(f"questionnaire: field {i} is not an object")
        name = str(field.get("name", "")).strip()
        if not name or not name.replace("_", "").isalnum():
            raise ServiceError(f"questionnaire: field {i} needs a name of letters, digits and _ (got {name!r})")
        if name in seen:
            raise ServiceError(f"questionnaire: the name {name!r} is used twice")
        seen.add(name)
        kind = str(field.get("type", "text"))
        if kind not in QUESTION_TYPES:
            raise ServiceError(
                f"questionnaire: field {name!r} has type {kind!r}; use one of {', '.join(QUESTION_TYPES)}"
            )
        options = field.get("options") or []
        if not isinstance(options, list) or not all(isinstance(o, (str, int, float)) for o in options):
            raise ServiceError(f"questionnaire: the options of {name!r} must be a list of texts")
        if kind == "select" and not options:
            raise ServiceError(f"questionnaire: the select field {name!r} needs options")
        out.append(
            {
                "name": name,
                "label": str(field.get("label") or name)[:200],
                "type": kind,
                "options": [str(o) for o in options],
                "required": bool(field.get("required", False)),
            }
        )
    return out


#: The researcher's texts a translation may give (``config["translations"][language]``, shown
#: on the participant pages in that language; webmushra/i18n.py), besides questionnaire labels:
#: fields of the experiment, and ``trial_instructions`` from its config.
TRANSLATABLE_TEXTS = ("title", "description", "instructions", "consent_text", "trial_instructions")


def validate_translations(value: Any, questions: list[dict]) -> dict[str, dict]:
    """Check the translations of the researcher's texts: ``{language: {text: translation, ...,
    "questionnaire": {field name: label}}}`` for the participant pages' languages other than
    English (``settings.LANGUAGES``); return them with the empty ones left out."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ServiceError("translations: expected an object of languages")
    languages = [code for code, _name in settings.LANGUAGES if code != settings.LANGUAGE_CODE]
    names = {f["name"] for f in questions}
    out: dict[str, dict] = {}
    for code, texts in value.items():
        if code not in languages:
            raise ServiceError(
                f"translations: {code!r} is not a language of the participant pages (use {', '.join(languages)})"
            )
        if not isinstance(texts, dict):
            raise ServiceError(f"translations: {code}: expected an object of texts")
        unknown = sorted(set(texts) - {*TRANSLATABLE_TEXTS, "questionnaire"})
        if unknown:
            raise ServiceError(
                f"translations: {code}: {unknown[0]} is not a translatable text "
                f"(use {', '.join(TRANSLATABLE_TEXTS)}, questionnaire)"
            )
        clean: dict[str, Any] = {}
        for field in TRANSLATABLE_TEXTS:
            text = texts.get(field)
            if text is None:
                continue
            if not isinstance(text, str):
                raise ServiceError(f"translations: {code}: {field} must be a text")
            limit = {"title": 200, "trial_instructions": MAX_TRIAL_INSTRUCTIONS_CHARS}.get(field)
            text = text.strip()[:limit] if limit else text.strip()
            if text:
                clean[field] = text
        labels = texts.get("questionnaire")
        if labels is not None:
            if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
                raise ServiceError(f"translations: {code}: questionnaire must map field names to labels")
            stray = sorted(set(labels) - names)
            if stray:
                raise ServiceError(f"translations: {code}: the questionnaire has no field {stray[0]!r}")
            kept = {name: label.strip()[:200] for name, label in labels.items() if label.strip()}
            if kept:
                clean["questionnaire"] = kept
        if clean:
            out[code] = clean
    return out


def validate_config(config: dict) -> dict:
    """Check the flow and rule settings read by the participant pages; return them normalised."""
    if not isinstance(config, dict):
        raise ServiceError("config: expected an object")
    unstorable = json_problem(config, "config")
    if unstorable:
        raise ServiceError(unstorable)
    cfg = dict(config)
    if "blocks" in cfg:
        cfg["blocks"] = clean_blocks(cfg["blocks"])
    if "questionnaire" in cfg:
        cfg["questionnaire"] = validate_questionnaire(cfg["questionnaire"])
    if "translations" in cfg:
        questions = cfg.get("questionnaire")
        translations = validate_translations(
            cfg["translations"], DEFAULT_QUESTIONNAIRE if questions is None else questions
        )
        if translations:
            cfg["translations"] = translations
        else:
            del cfg["translations"]
    if "trial_subset_size" in cfg:
        try:
            size = int(cfg["trial_subset_size"] or 0)
        except (TypeError, ValueError, OverflowError):
            raise ServiceError("trial_subset_size: expected a whole number (0 = every trial)") from None
        if size < 0:
            raise ServiceError("trial_subset_size: must be 0 (every trial) or more")
        cfg["trial_subset_size"] = size
    if "catch_trials" in cfg:
        count = _number(cfg["catch_trials"] or 0)
        if count is None or count != int(count) or not 0 <= count <= MAX_CATCH_TRIALS:
            raise ServiceError(f"catch_trials: expected a whole number from 0 (none) to {MAX_CATCH_TRIALS}")
        cfg["catch_trials"] = int(count)
    if "repeat_trials" in cfg:
        count = _number(cfg["repeat_trials"] or 0)
        if count is None or count != int(count) or not 0 <= count <= MAX_REPEAT_TRIALS:
            raise ServiceError(f"repeat_trials: expected a whole number from 0 (none) to {MAX_REPEAT_TRIALS}")
        cfg["repeat_trials"] = int(count)
    if "trial_comments" in cfg:
        mode = cfg["trial_comments"] or "off"
        if mode not in TRIAL_COMMENT_MODES:
            raise ServiceError(f"trial_comments: expected one of {', '.join(TRIAL_COMMENT_MODES)}")
        cfg["trial_comments"] = mode
    if "trial_instructions" in cfg:
        text = cfg["trial_instructions"] if cfg["trial_instructions"] is not None else ""
        if not isinstance(text, str):
            raise ServiceError("trial_instructions: expected a text")
        text = text.strip()
        if len(text) > MAX_TRIAL_INSTRUCTIONS_CHARS:
            raise ServiceError(f"trial_instructions: at most {MAX_TRIAL_INSTRUCTIONS_CHARS} characters")
        cfg["trial_instructions"] = text
    _validate_exit(cfg)
    hc = cfg.get("headphone_check")
    if hc is not None:
        if not isinstance(hc, dict):
            raise ServiceError("headphone_check: expected an object")
        tests = hc.get("tests", list(HEADPHONE_DEFAULTS["tests"]))
        if not isinstance(tests, list):
            raise ServiceError(f"headphone_check: tests must be a list of {', '.join(HEADPHONE_TESTS)}")
        bad = [t for t in tests if t not in HEADPHONE_TESTS]
        if bad:
            raise ServiceError(f"headphone_check: unknown test(s) {', '.join(map(str, bad))}")
        try:
            trials = int(hc.get("trials_per_test", HEADPHONE_DEFAULTS["trials_per_test"]))
            threshold = float(hc.get("pass_threshold", HEADPHONE_DEFAULTS["pass_threshold"]))
        except (TypeError, ValueError, OverflowError):
            raise ServiceError("headphone_check: trials_per_test and pass_threshold must be numbers") from None
        if trials < 1:
            raise ServiceError("headphone_check: trials_per_test must be at least 1")
        if not 0.0 <= threshold <= 1.0:
            raise ServiceError("headphone_check: pass_threshold is a fraction between 0 and 1")
        cfg["headphone_check"] = {
            "enabled": bool(hc.get("enabled", False)),
            "tests": list(tests),
            "trials_per_test": trials,
            "pass_threshold": threshold,
        }
    rules = cfg.get("rules")
    if rules is not None:
        if not isinstance(rules, dict):
            raise ServiceError("rules: expected an object")
        unknown = sorted(set(rules) - set(RULE_DEFAULTS))
        if unknown:
            raise ServiceError(f"rules: {unknown[0]} is not a rule")
        normalised: dict[str, bool | float] = {}
        for k, d in RULE_DEFAULTS.items():
            value = rules.get(k, d)
            if isinstance(d, bool):
                normalised[k] = bool(value)
                continue
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):
                raise ServiceError(f"rules: {k} must be a number of seconds") from None
            if not 0.0 <= number <= RULE_MAXIMA[k]:
                raise ServiceError(f"rules: {k} must be between 0 and {RULE_MAXIMA[k]:g} s")
            normalised[k] = number
        cfg["rules"] = normalised
        if cfg["rules"]["loop_min_seconds"] < 0.1:
            raise ServiceError("rules: loop_min_seconds must be at least 0.1 s")
    quality = cfg.get("quality")
    if quality is not None:
        cfg["quality"] = validate_quality(quality)
    if cfg.get("analysis") is not None:
        # Refused here, by name, rather than when the monitor or a report first reads it.
        try:
            _AnalysisSettings.from_dict(cfg["analysis"])
        except (ValueError, TypeError, OverflowError) as exc:  # EvaluationError is a ValueError
            raise ServiceError(f"analysis: {exc}") from None
    for key in FLOW_DEFAULTS:
        if key in cfg:
            cfg[key] = bool(cfg[key])
    return cfg
