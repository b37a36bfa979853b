"""The rules and settings an experiment can set, their defaults and their validation: one place.

The settings form, the services, the participant pages and the player (through its trial
JSON) all read these definitions; nothing else holds a copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ServiceError

if TYPE_CHECKING:
    from .models import Experiment


#: The MUSHRA page's rules and their defaults (one place; the settings page and the player read it).
RULE_DEFAULTS: dict[str, bool | float] = {
    "must_play_all": True,  # every signal must be played before the trial can be submitted
    "only_playing_slider_moves": True,  # a slider moves only while its signal is the one playing
    "require_one_100": True,  # at least one signal rated 100 (the hidden reference, BS.1534-3 §5.2)
    "loop_min_seconds": 0.5,
}

#: BS.1534-3 §5.3: at most 12 signals (incl. hidden reference and anchors) per trial; the player
#: receives it with each trial (``max_signals``).
MAX_SIGNALS_PER_TRIAL = 12


#: The participant flow's switches and their defaults: a training trial, then the level page.
FLOW_DEFAULTS: dict[str, bool] = {"training": True, "level_setting": True}


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
    {"name": "comment", "label": "Any comments?", "type": "textarea", "options": [], "required": False}
]


def questionnaire_fields(experiment: Experiment) -> list[dict[str, Any]]:
    """The questionnaire participants answer (an empty list: none, straight to completion)."""
    fields = experiment.config.get("questionnaire")
    return [dict(f) for f in (DEFAULT_QUESTIONNAIRE if fields is None else fields)]


def player_rules(experiment: Experiment) -> dict[str, bool | float]:
    """The MUSHRA page's rules for this experiment, defaults filled in."""
    return RULE_DEFAULTS | (experiment.config.get("rules") or {})


#: Questionnaire field types the participant pages can render.
QUESTION_TYPES = ("text", "number", "textarea", "select")
#: Experiment fields a researcher edits on the settings page (besides ``config``).
SETTINGS_FIELDS = ("title", "description", "instructions", "consent_text", "estimated_minutes", "loudness_target_lufs")
HEADPHONE_TESTS = ("antiphase", "huggins")


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


def validate_config(config: dict) -> dict:
    """Check the flow and rule settings read by the participant pages; return them normalised."""
    if not isinstance(config, dict):
        raise ServiceError("config: expected an object")
    cfg = dict(config)
    if "questionnaire" in cfg:
        cfg["questionnaire"] = validate_questionnaire(cfg["questionnaire"])
    if "trial_subset_size" in cfg:
        try:
            size = int(cfg["trial_subset_size"] or 0)
        except (TypeError, ValueError):
            raise ServiceError("trial_subset_size: expected a whole number (0 = every trial)") from None
        if size < 0:
            raise ServiceError("trial_subset_size: must be 0 (every trial) or more")
        cfg["trial_subset_size"] = size
    url = cfg.get("completion_url")
    if url and not str(url).startswith(("https://", "http://")):
        raise ServiceError("completion_url: must start with https://")
    hc = cfg.get("headphone_check")
    if hc is not None:
        if not isinstance(hc, dict):
            raise ServiceError("headphone_check: expected an object")
        tests = hc.get("tests", list(HEADPHONE_DEFAULTS["tests"]))
        bad = [t for t in tests if t not in HEADPHONE_TESTS]
        if bad:
            raise ServiceError(f"headphone_check: unknown test(s) {', '.join(map(str, bad))}")
        try:
            trials = int(hc.get("trials_per_test", HEADPHONE_DEFAULTS["trials_per_test"]))
            threshold = float(hc.get("pass_threshold", HEADPHONE_DEFAULTS["pass_threshold"]))
        except (TypeError, ValueError):
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
        cfg["rules"] = {
            k: (bool(rules.get(k, d)) if isinstance(d, bool) else float(rules.get(k, d)))
            for k, d in RULE_DEFAULTS.items()
        }
        if cfg["rules"]["loop_min_seconds"] < 0.1:
            raise ServiceError("rules: loop_min_seconds must be at least 0.1 s")
    for key in FLOW_DEFAULTS:
        if key in cfg:
            cfg[key] = bool(cfg[key])
    return cfg
