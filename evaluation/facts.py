"""The experiment's facts, as the platform knows them, in the methods paragraph's words.

A report built from a ratings table alone knows the ratings; how many people were recruited,
screened out or excluded and why, what they said of themselves, what they heard (excerpts,
sample rate, loudness alignment, anchors, the checkpoints' SHA-256) and which rules the test
page enforced come from the platform as plain data (``build_report(..., facts=...)``). Every
key is optional and documented in docs/statistics.md ("Experiment facts"); an unknown key or
a value of the wrong type is an ``EvaluationError`` naming it, so a typo never drops a
sentence silently.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import EvaluationError

COUNT, NUMBER, TEXT, FLAG, SHA256 = "count", "number", "text", "flag", "sha256"
OPTIONAL_NUMBER = "number or null"
OPTIONAL_SHA256 = "sha256 or null"
#: name -> text or number: counts per answer, or rule values.
TALLY, RULES = "counts", "rules"

SCHEMA: dict[str, Any] = {
    "platform": TEXT,
    "participants": {
        "recruited": COUNT,
        "completed": COUNT,
        "screened_out": COUNT,
        "declined": COUNT,
        "incomplete": COUNT,
        "withdrawn": COUNT,
        "pilot": COUNT,
        "excluded": [{"participant": TEXT, "reason": TEXT}],
    },
    "demographics": [
        {"question": TEXT, "answered": COUNT, "counts": TALLY, "median": NUMBER, "min": NUMBER, "max": NUMBER}
    ],
    "headphone_check": {
        "enabled": FLAG,
        "tests": [TEXT],
        "trials_per_test": COUNT,
        "pass_threshold": NUMBER,
        "require": TEXT,
        "passed": COUNT,
        "failed": COUNT,
    },
    "excerpts": {"count": COUNT, "durations_s": [NUMBER], "training": COUNT},
    "sample_rate_hz": COUNT,
    "loudness": {"target_lufs": OPTIONAL_NUMBER, "method": TEXT},
    "anchors": [{"label": TEXT, "cutoff_hz": NUMBER}],
    "models": [{"label": TEXT, "checkpoint": TEXT, "format": TEXT, "architecture": TEXT, "sha256": OPTIONAL_SHA256}],
    "rules": RULES,
}

_HEADPHONE_TESTS = {
    "antiphase": "the antiphase test of Woods et al. (2017)",
    "huggins": "the Huggins-pitch test of Milne et al. (2021)",
}
_REASON_WORDS = 120


def _fail(path: str, expected: str, value: object) -> EvaluationError:
    return EvaluationError(f"facts{'.' if path else ''}{path}: expected {expected}, got {value!r}"[:300])


def _check(value: Any, spec: Any, path: str) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, Mapping):
            raise _fail(path, "an object", value)
        unknown = sorted(set(map(str, value)) - set(spec))
        if unknown:
            where = f"facts.{path}" if path else "facts"
            raise EvaluationError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(spec)}")
        for key, item in value.items():
            _check(item, spec[key], f"{path}.{key}" if path else str(key))
    elif isinstance(spec, list):
        if not isinstance(value, (list, tuple)):
            raise _fail(path, "a list", value)
        for i, item in enumerate(value):
            _check(item, spec[0], f"{path}[{i}]")
    elif spec in (OPTIONAL_NUMBER, OPTIONAL_SHA256) and value is None:
        return
    elif spec == COUNT:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _fail(path, "a whole number >= 0", value)
    elif spec in (NUMBER, OPTIONAL_NUMBER):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _fail(path, "a finite number", value)
    elif spec == TEXT:
        if not isinstance(value, str):
            raise _fail(path, "a text", value)
    elif spec == FLAG:
        if not isinstance(value, bool):
            raise _fail(path, "true or false", value)
    elif spec in (SHA256, OPTIONAL_SHA256):
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
            raise _fail(path, "a SHA-256 in 64 lower-case hex digits", value)
    elif spec in (TALLY, RULES):
        if not isinstance(value, Mapping):
            raise _fail(path, "an object", value)
        for key, item in value.items():
            if not (spec == RULES and isinstance(item, bool)):
                _check(item, COUNT if spec == TALLY else NUMBER, f"{path}.{key}")


def check_facts(facts: Mapping[str, Any] | None) -> dict[str, Any]:
    """``facts`` checked against ``SCHEMA`` (every key optional); {} for None."""
    if facts is None:
        return {}
    _check(facts, SCHEMA, "")
    return dict(facts)


def _join(parts: Sequence[str]) -> str:
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _were(count: int, noun: str = "") -> str:
    """``1 was``, ``2 were`` (with ``noun``: ``1 participant was``, ``2 participants were``)."""
    subject = _n(count, noun) if noun else str(count)
    return f"{subject} {'was' if count == 1 else 'were'}"


def _seconds(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    if math.isclose(low, high, abs_tol=0.05):
        return f"each {low:.1f} s long"
    return f"{low:.1f}–{high:.1f} s long, median {statistics.median(values):.1f} s"


def participants_sentences(facts: Mapping[str, Any]) -> list[str]:
    """Recruitment, completion, screening out, withdrawal, pilot sessions, exclusions by hand and why."""
    p = facts.get("participants") or {}
    out = []
    if "recruited" in p:
        fates = [
            f"{p['completed']} completed it" if "completed" in p else "",
            f"{_were(p['screened_out'])} screened out by the headphone check" if p.get("screened_out") else "",
            f"{p['declined']} declined consent" if p.get("declined") else "",
            f"{p['incomplete']} did not finish" if p.get("incomplete") else "",
        ]
        text = f"{_n(p['recruited'], 'participant')} started the test"
        text += f"; {_join(fates)}" if any(fates) else ""
        if p.get("withdrawn"):
            text += f"; {p['withdrawn']} more withdrew and their data were deleted"
        if p.get("pilot"):
            text += f" ({_were(p['pilot'], 'pilot session')} kept apart and not counted)"
        out.append(text + ".")
    excluded = p.get("excluded")
    if excluded is not None:
        if excluded:
            reasons = "; ".join(
                f"{e.get('participant', '?')}: {_short(e.get('reason') or 'no reason given')}" for e in excluded
            )
            out.append(
                f"{_were(len(excluded), 'participant')} excluded by the experimenter before the analysis ({reasons})."
            )
        else:
            out.append("No participant was excluded by the experimenter.")
    return out


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _REASON_WORDS else text[: _REASON_WORDS - 1] + "…"


def demographics_sentence(facts: Mapping[str, Any]) -> str:
    """The questionnaire's answers in brief: medians and ranges of numbers, counts of choices."""
    parts = []
    for q in facts.get("demographics") or []:
        answered = f" (n = {q['answered']})" if "answered" in q else ""
        if "median" in q:
            span = f", range {q['min']:g}–{q['max']:g}" if "min" in q and "max" in q else ""
            parts.append(f"{q.get('question', '?')}{answered}: median {q['median']:g}{span}")
        elif q.get("counts"):
            counts = ", ".join(f"{k} {v}" for k, v in q["counts"].items())
            parts.append(f"{q.get('question', '?')}{answered}: {counts}")
    return f"Questionnaire: {'; '.join(parts)}." if parts else ""


def headphone_sentence(facts: Mapping[str, Any]) -> str:
    """The headphone check: which tests, how many trials, the pass mark, how many passed and failed."""
    h = facts.get("headphone_check")
    if h is None:
        return ""
    if not h.get("enabled"):
        return "No headphone check was run."
    tests = _join([_HEADPHONE_TESTS.get(t, t) for t in h.get("tests") or []]) or "a headphone check"
    details = []
    if "trials_per_test" in h:
        details.append(f"{h['trials_per_test']} trials each")
    if "pass_threshold" in h:
        need = "in every test" if h.get("require", "all") == "all" else "in at least one test"
        details.append(f"passed with at least {100 * h['pass_threshold']:.0f} % correct {need}")
    text = f"Headphone use was checked with {tests}" + (f" ({'; '.join(details)})" if details else "")
    if "passed" in h or "failed" in h:
        failed = h.get("failed", 0)
        text += f": {h.get('passed', 0)} passed and {failed} failed ({'was' if failed == 1 else 'were'} screened out)"
    return text + "."


def stimuli_sentences(facts: Mapping[str, Any], n_models: int) -> list[str]:
    """Excerpts and their lengths, sample rate, loudness alignment, anchors and the models' checkpoints."""
    out = []
    e = facts.get("excerpts") or {}
    if "count" in e:
        text = f"{_were(e['count'], 'excerpt')} used in the test"
        if e.get("durations_s"):
            text += f" ({_seconds(e['durations_s'])})"
        if e.get("training"):
            text += f", and {e['training']} more only in training"
        out.append(text + ".")
    if "sample_rate_hz" in facts:
        out.append(f"Stimuli were presented at a sample rate of {facts['sample_rate_hz'] / 1000:g} kHz.")
    loud = facts.get("loudness")
    if loud is not None:
        method = f" ({loud['method']})" if loud.get("method") else ""
        target = loud.get("target_lufs")
        aim = "to its reference" if target is None else f"to {target:g} LUFS"
        out.append(f"Every condition of an item was aligned in integrated loudness{method} {aim}.")
    anchors = facts.get("anchors")
    if anchors:
        cutoffs = _join([f"{a['cutoff_hz'] / 1000:g} kHz" for a in anchors if "cutoff_hz" in a])
        out.append(
            f"Each trial held the hidden reference, {_n(len(anchors), 'anchor')} (the reference low-pass filtered at "
            f"{cutoffs}, ITU-R BS.1534-3 §5.1) and {_n(n_models, 'system')} under test."
        )
    models = facts.get("models") or []
    if models:
        described = []
        for m in models:
            what = ", ".join(x for x in (m.get("checkpoint"), m.get("architecture"), m.get("format")) if x)
            sha = f", SHA-256 {m['sha256']}" if m.get("sha256") else ", pre-rendered audio"
            described.append(f"{m.get('label', '?')} ({what}{sha})" if what else f"{m.get('label', '?')} ({sha[2:]})")
        out.append(f"Systems under test: {'; '.join(described)}.")
    return out


_RULE_WORDS = {
    "must_play_all": "required every signal to be played",
    "only_playing_slider_moves": "let a slider move only while its signal was playing",
    "require_one_100": "required at least one rating of 100 per trial",
}


def rules_sentence(facts: Mapping[str, Any]) -> str:
    """The rules the test page and the server enforced on every trial, in words."""
    rules = facts.get("rules")
    if rules is None:
        return ""
    enforced = []
    for name, value in rules.items():
        if name == "must_play_all" and value:
            least = rules.get("min_play_seconds") or 0
            enforced.append(_RULE_WORDS[name] + (f" for at least {least:g} s" if least else ""))
        elif name in _RULE_WORDS and value:
            enforced.append(_RULE_WORDS[name])
        elif name == "min_trial_seconds" and value:
            enforced.append(f"kept each trial open for at least {value:g} s")
        elif name == "loop_min_seconds" and value:
            enforced.append(f"allowed loops of at least {value:g} s")
        elif name not in _RULE_WORDS and name not in ("min_play_seconds", "min_trial_seconds", "loop_min_seconds"):
            if value is True or (not isinstance(value, bool) and value):
                enforced.append(f"enforced {name.replace('_', ' ')}" + ("" if value is True else f" = {value:g}"))
    if not enforced:
        return "The test page enforced no rules on submission."
    return f"The test page {_join(enforced)}; a trial breaking a rule could not be submitted."


def software_sentence(facts: Mapping[str, Any], versions: Mapping[str, str]) -> str:
    """The platform's version and the versions of the statistics software."""
    names = {"numpy": "NumPy", "scipy": "SciPy", "pandas": "pandas", "statsmodels": "statsmodels"}
    packages = ", ".join(f"{label} {versions[k]}" for k, label in names.items() if k in versions)
    text = f"The test ran on {facts['platform']}; the" if facts.get("platform") else "The"
    return f"{text} statistics were computed with Python {versions.get('python', '?')} ({packages})."


def methods_sentences(
    facts: Mapping[str, Any] | None, n_models: int, versions: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """Sentences before the analysis (participants, stimuli, procedure) and after it (software)."""
    facts = facts or {}
    before = [
        *participants_sentences(facts),
        demographics_sentence(facts),
        *stimuli_sentences(facts, n_models),
        headphone_sentence(facts),
        rules_sentence(facts),
    ]
    return [s for s in before if s], [software_sentence(facts, versions)]
