"""The listening-test paradigms an experiment's blocks use, and every rule of them in one place.

An experiment runs its blocks in order (``config["blocks"]``, default one MUSHRA block); each
block is one paradigm over the experiment's excerpts, conditions and rendered stimuli:

- ``mushra``: ITU-R BS.1534-3 (every condition on one page, 0-100 sliders).
- ``bs1116``: ITU-R BS.1116-3 §5.1 double-blind triple stimulus with hidden reference: A is the
  open reference, B and C the hidden reference and the condition in random order, both graded on
  the continuous 1.0-5.0 impairment scale.
- ``abx``: X is A or B at random, balanced per participant and pair; the answer is A or B.
- ``ab`` / ``abn``: preference between two conditions; ``abn`` adds "no preference".
- ``acr``: ITU-T P.800 Annex B absolute category rating, one signal, five categories (or a
  category scale of the researcher's own, ``scale``: 2 to 11 labels, as a webMUSHRA likert page).
- ``dcr``: ITU-T P.800 Annex D degradation category rating against the open reference.
- ``ranking``: every condition of the excerpt put in order, best first.

ACR and DCR blocks may ask gold questions (ITU-T P.808, ``gold``): a condition whose
answer is known (the device's own recording "Excellent", a 3.5 kHz low-pass "Bad"), asked once
per participant on a random test excerpt among the block's trials and looking like any other;
an answer more than ``tolerance`` categories from the known one fails the participant's P.808
check, and the block's analysis leaves that participant out (``evaluation.paradigms.acr``).

They may also ask trapping questions (ITU-T P.808 §6.3.8, ``trapping``): the beginning of a
test stimulus followed by a spoken message the researcher uploaded that asks for one category
(``services.trapping`` builds them when the experiment opens); any other answer fails the check.

A trial of a paradigm other than MUSHRA compares the conditions in its ``design`` (condition
ids); its answer is stored on the response (``TrialResponse.answer``) by condition id, as
:func:`clean_answer` returns it. Nothing here touches the database.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .errors import FieldError, ServiceError

MUSHRA = "mushra"
#: name -> short title (researcher pages and the report)
PARADIGMS: dict[str, str] = {
    MUSHRA: "MUSHRA (ITU-R BS.1534-3)",
    "bs1116": "ITU-R BS.1116-3 hidden reference",
    "abx": "ABX discrimination",
    "ab": "AB preference",
    "abn": "AB preference with no preference (ABN)",
    "acr": "ACR, absolute category rating (ITU-T P.800)",
    "dcr": "DCR, degradation category rating (ITU-T P.800)",
    "ranking": "Ranking",
}
#: Paradigms whose trials present the open reference (the reference URL) beside their signals.
WITH_OPEN_REFERENCE = frozenset({MUSHRA, "bs1116", "dcr"})
#: Paradigms whose trials compare the hidden reference with one condition at a time.
AGAINST_REFERENCE = frozenset({"bs1116", "abx", "dcr"})
#: Paradigms whose trials a block may repeat (``repetitions``): more answers per pair.
REPEATABLE = frozenset({"abx", "ab", "abn"})
#: The most repetitions of each ABX / AB trial a block may ask for.
MAX_REPETITIONS = 20

#: The five grades of BS.1116-3's impairment scale (§5.2), worst first.
IMPAIRMENT_SCALE = (
    (1.0, _("Very annoying")),
    (2.0, _("Annoying")),
    (3.0, _("Slightly annoying")),
    (4.0, _("Perceptible, but not annoying")),
    (5.0, _("Imperceptible")),
)
#: ITU-T P.800 Annex B, Table B.1 (listening-quality scale), worst first.
ACR_SCALE = ((1, _("Bad")), (2, _("Poor")), (3, _("Fair")), (4, _("Good")), (5, _("Excellent")))
#: ITU-T P.800 Annex D, Table D.1 (degradation category scale), worst first.
DCR_SCALE = (
    (1, _("Degradation is very annoying")),
    (2, _("Degradation is annoying")),
    (3, _("Degradation is audible and slightly annoying")),
    (4, _("Degradation is audible but not annoying")),
    (5, _("Degradation is inaudible")),
)

#: Block settings and their defaults.
BLOCK_DEFAULTS: dict[str, Any] = {
    "paradigm": MUSHRA,
    # Trials of each design per excerpt (ABX and AB: more answers per pair).
    "repetitions": 1,
    # Training trials (from training excerpts) before the block's test trials, when the
    # experiment's flow has training on.
    "training": True,
    # Instructions shown on every trial page of the block (empty: the experiment's).
    "instructions": "",
    # AB / ABN: compare the hidden reference too (the device itself as one of the pairs' members).
    "with_reference": False,
    # ACR: the category labels, worst first (empty: ITU-T P.800's five, ``ACR_SCALE``).
    "scale": [],
    # ACR / DCR: gold questions, ``{"condition": label, "expected": category, "tolerance": n}``.
    "gold": [],
    # ACR / DCR: trapping questions, ``{"message": stored name, "answer": category}``.
    "trapping": [],
    # The block's texts in the participant pages' other languages: ``{code: {"instructions": text,
    # "scale": [labels]}}`` (``webmushra.i18n``: a text without its translation is shown in English).
    "translations": {},
}
#: Paradigms whose blocks may ask gold questions (ITU-T P.808).
WITH_GOLD = frozenset({"acr", "dcr"})
#: The most gold questions a block asks each participant.
MAX_GOLD = 5
#: P.808's tolerance: an answer at most one category from the known one passes.
GOLD_TOLERANCE = 1
#: The most trapping questions a block asks each participant.
MAX_TRAPPING = 3
#: The storage names of uploaded trapping messages (``services.trapping.message_name``).
TRAPPING_MESSAGE = re.compile(r"trapping/e(\d+)/[0-9a-f]{32}\.wav")
#: The fewest and most points of an ACR block's own category scale.
SCALE_POINTS = (2, 11)
#: The longest label of a scale's point.
MAX_SCALE_LABEL = 80


def blocks(config: dict) -> list[dict[str, Any]]:
    """The experiment's blocks, defaults filled in (no ``blocks``: one MUSHRA block)."""
    given = config.get("blocks") or [{}]
    out = []
    for b in given:
        block = BLOCK_DEFAULTS | (b if isinstance(b, dict) else {})
        if block["gold"]:
            block["gold"] = [{"tolerance": GOLD_TOLERANCE} | q for q in block["gold"] if isinstance(q, dict)]
        out.append(block)
    return out


def clean_blocks(value: object) -> list[dict[str, Any]]:
    """Check ``config["blocks"]``; return it normalised (FieldError naming the block and setting)."""
    if not isinstance(value, list) or not value:
        raise FieldError("blocks", "expected a list of at least one block")
    if len(value) > 10:
        raise FieldError("blocks", "at most 10 blocks")
    out = []
    for n, block in enumerate(value, start=1):
        where = f"blocks[{n}]"
        if not isinstance(block, dict):
            raise FieldError(where, "expected an object")
        unknown = sorted(set(block) - set(BLOCK_DEFAULTS))
        if unknown:
            raise FieldError(where, f"unknown setting(s) {', '.join(unknown)}")
        b = BLOCK_DEFAULTS | block
        if not isinstance(b["paradigm"], str) or b["paradigm"] not in PARADIGMS:
            raise FieldError(f"{where}.paradigm", f"expected one of {', '.join(PARADIGMS)}")
        reps = b["repetitions"]
        if isinstance(reps, bool) or not isinstance(reps, int) or not (1 <= reps <= MAX_REPETITIONS):
            raise FieldError(f"{where}.repetitions", f"expected a whole number from 1 to {MAX_REPETITIONS}")
        if b["paradigm"] not in REPEATABLE and reps != 1:
            raise FieldError(
                f"{where}.repetitions", "only ABX and AB / ABN blocks repeat their trials; the others show each once"
            )
        for flag in ("training", "with_reference"):
            if not isinstance(b[flag], bool):
                raise FieldError(f"{where}.{flag}", "expected true or false")
        if b["with_reference"] and b["paradigm"] not in ("ab", "abn"):
            raise FieldError(f"{where}.with_reference", "only AB / ABN blocks choose whether to compare the reference")
        if not isinstance(b["instructions"], str) or len(b["instructions"]) > 5000:
            raise FieldError(f"{where}.instructions", "expected text of at most 5000 characters")
        b["scale"] = _clean_scale(b, where)
        b["gold"] = _clean_gold(b, where)
        b["trapping"] = _clean_trapping(b, where)
        b["translations"] = _clean_translations(b, where)
        out.append(b)
    if sum(b["paradigm"] == MUSHRA for b in out) > 1:
        raise FieldError("blocks", "at most one MUSHRA block (more models: split the experiment into blocks)")
    return out


def _clean_scale(block: dict[str, Any], where: str) -> list[str]:
    """An ACR block's own category labels, worst first (``[]``: P.800's five)."""
    labels = block["scale"]
    if labels in (None, []):
        return []
    if block["paradigm"] != "acr":
        raise FieldError(
            f"{where}.scale", "only ACR blocks take a scale of their own (DCR and BS.1116 keep their standard scales)"
        )
    low, high = SCALE_POINTS
    if not isinstance(labels, list) or not (low <= len(labels) <= high):
        raise FieldError(f"{where}.scale", f"expected a list of {low} to {high} labels, worst first")
    out = []
    for n, label in enumerate(labels, start=1):
        if not isinstance(label, str) or not label.strip() or len(label.strip()) > MAX_SCALE_LABEL:
            raise FieldError(f"{where}.scale[{n}]", f"expected a label of 1 to {MAX_SCALE_LABEL} characters")
        out.append(" ".join(label.split()))
    if len({label.casefold() for label in out}) != len(out):
        raise FieldError(f"{where}.scale", "each label once (two points of the scale read the same)")
    return out


def _clean_translations(block: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """A block's instructions and scale labels per language of the participant pages other than
    English; empty texts left out."""
    given = block["translations"]
    if given in (None, {}):
        return {}
    at = f"{where}.translations"
    languages = [code for code, _name in settings.LANGUAGES if code != settings.LANGUAGE_CODE]
    if not isinstance(given, dict):
        raise FieldError(at, f"expected an object of languages ({', '.join(languages)})")
    out: dict[str, dict[str, Any]] = {}
    for code, texts in given.items():
        if code not in languages:
            raise FieldError(at, f"{code!r} is not a language of the participant pages (use {', '.join(languages)})")
        if not isinstance(texts, dict) or set(texts) - {"instructions", "scale"}:
            raise FieldError(f"{at}.{code}", "expected an object with instructions and / or scale")
        clean: dict[str, Any] = {}
        text = texts.get("instructions") or ""
        if not isinstance(text, str) or len(text) > 5000:
            raise FieldError(f"{at}.{code}.instructions", "expected text of at most 5000 characters")
        if text.strip():
            clean["instructions"] = text.strip()
        labels = texts.get("scale") or []
        if labels:
            if not block["scale"]:
                raise FieldError(f"{at}.{code}.scale", "the block has no scale of its own to translate")
            if not isinstance(labels, list) or len(labels) != len(block["scale"]):
                raise FieldError(f"{at}.{code}.scale", f"expected {len(block['scale'])} labels, one per category")
            for n, label in enumerate(labels, start=1):
                if not isinstance(label, str) or not label.strip() or len(label.strip()) > MAX_SCALE_LABEL:
                    raise FieldError(
                        f"{at}.{code}.scale[{n}]", f"expected a label of 1 to {MAX_SCALE_LABEL} characters"
                    )
            clean["scale"] = [" ".join(label.split()) for label in labels]
        if clean:
            out[code] = clean
    return out


def points(block: dict[str, Any]) -> int:
    """The number of categories of an ACR / DCR block's scale (P.800's five unless its own)."""
    return len(block.get("scale") or ()) or len(ACR_SCALE)


def _clean_gold(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """An ACR / DCR block's gold questions (ITU-T P.808): condition label, the known
    category and the tolerance, each question one a careless answer can fail."""
    gold = block["gold"]
    if gold in (None, []):
        return []
    if block["paradigm"] not in WITH_GOLD:
        raise FieldError(f"{where}.gold", "only ACR and DCR blocks ask gold questions (ITU-T P.808)")
    if not isinstance(gold, list) or len(gold) > MAX_GOLD:
        raise FieldError(f"{where}.gold", f"expected a list of at most {MAX_GOLD} gold questions")
    n_points = points(block)
    out: list[dict[str, Any]] = []
    for n, question in enumerate(gold, start=1):
        at = f"{where}.gold[{n}]"
        if not isinstance(question, dict):
            raise FieldError(at, "expected an object with condition, expected and tolerance")
        unknown = sorted(set(question) - {"condition", "expected", "tolerance"})
        if unknown:
            raise FieldError(at, f"unknown setting(s) {', '.join(unknown)}")
        label = question.get("condition")
        if not isinstance(label, str) or not label.strip():
            raise FieldError(f"{at}.condition", "expected the label of one of the experiment's conditions")
        expected = question.get("expected")
        if isinstance(expected, bool) or not isinstance(expected, int) or not (1 <= expected <= n_points):
            raise FieldError(f"{at}.expected", f"expected the known category, a whole number from 1 to {n_points}")
        tolerance = question.get("tolerance", GOLD_TOLERANCE)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
            raise FieldError(f"{at}.tolerance", "expected a whole number of categories, 0 or more")
        if expected - tolerance <= 1 and expected + tolerance >= n_points:
            raise FieldError(
                f"{at}.tolerance",
                f"every answer from 1 to {n_points} is within {tolerance} of {expected}: the question cannot "
                "be failed (lower the tolerance)",
            )
        out.append({"condition": label.strip(), "expected": expected, "tolerance": tolerance})
    if len({q["condition"] for q in out}) != len(out):
        raise FieldError(f"{where}.gold", "one gold question per condition")
    return out


def _clean_trapping(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """An ACR / DCR block's trapping questions (ITU-T P.808 §6.3.8): the stored message and the
    category it asks for."""
    given = block["trapping"]
    if given in (None, []):
        return []
    if block["paradigm"] not in WITH_GOLD:
        raise FieldError(f"{where}.trapping", "only ACR and DCR blocks ask trapping questions (ITU-T P.808)")
    if not isinstance(given, list) or len(given) > MAX_TRAPPING:
        raise FieldError(f"{where}.trapping", f"expected a list of at most {MAX_TRAPPING} trapping questions")
    n_points = points(block)
    out = []
    for n, question in enumerate(given, start=1):
        at = f"{where}.trapping[{n}]"
        if not isinstance(question, dict) or set(question) != {"message", "answer"}:
            raise FieldError(at, "expected an object with message and answer")
        message = question["message"]
        if not isinstance(message, str) or not TRAPPING_MESSAGE.fullmatch(message):
            raise FieldError(f"{at}.message", "expected the name of a message uploaded to this experiment")
        answer = question["answer"]
        if isinstance(answer, bool) or not isinstance(answer, int) or not (1 <= answer <= n_points):
            raise FieldError(f"{at}.answer", f"expected the category the message asks for, 1 to {n_points}")
        out.append({"message": message, "answer": answer})
    if len({q["message"] for q in out}) != len(out):
        raise FieldError(f"{where}.trapping", "each message once (upload it again for a second question)")
    return out


def gold_conditions(block: dict[str, Any], conditions: dict[str, int]) -> list[int]:
    """The condition ids of a block's gold questions (``conditions``: label -> id); ServiceError
    naming a label that is not one of the experiment's conditions."""
    ids = []
    for question in block.get("gold") or ():
        if question["condition"] not in conditions:
            known = ", ".join(sorted(conditions)) or "none"
            raise ServiceError(
                f"gold question: {question['condition']!r} is not a condition of the experiment (its conditions: "
                f"{known})"
            )
        ids.append(conditions[question["condition"]])
    return ids


def gold_key(condition: int) -> str:
    """The ``design_key`` of a gold question's trials (one per test excerpt)."""
    return f"gold:{condition}"


def gold_design(paradigm: str, condition: int, reference: int | None) -> list[int]:
    """What a gold question's trial compares: ACR the condition alone; DCR the condition against
    the open reference (the reference against itself is a question with a known answer too)."""
    if paradigm == "dcr":
        if reference is None:
            raise ServiceError("a DCR block needs the hidden reference")
        return [reference, condition]
    return [condition]


def trapping_key(number: int) -> str:
    """The ``design_key`` of a block's ``number``-th trapping question's trials (one per test excerpt)."""
    return f"trap:{number}"


def check_outcome(kind: str, question: dict[str, Any], score: int) -> dict[str, Any]:
    """A gold or trapping question's result (ITU-T P.808): passed when the answer is within the
    question's tolerance of the known category (a trapping question's tolerance is 0)."""
    return {
        "check": kind,
        "expected": question["expected"],
        "tolerance": question["tolerance"],
        "score": score,
        "passed": abs(score - int(question["expected"])) <= int(question["tolerance"]),
    }


def design_key(paradigm: str, design: list[int], repetition: int) -> str:
    """The key that tells apart a block's trials of one excerpt ("" for a MUSHRA page)."""
    if paradigm == MUSHRA:
        return ""
    return f"{paradigm}:{'-'.join(map(str, design))}:{repetition}"[:64]


def designs(block: dict[str, Any], conditions: list[tuple[int, str]]) -> list[list[int]]:
    """The condition ids each trial of a block compares, for one excerpt.

    ``conditions``: (id, kind) of the experiment's conditions in their order. Against the
    reference (BS.1116, ABX, DCR): [hidden reference, condition] per model condition; AB / ABN:
    every pair of model conditions (and the reference with ``with_reference``); ACR: every
    condition alone; MUSHRA and ranking: one page of all (an empty design).
    Raises ServiceError when the block has nothing to compare.
    """
    paradigm = block["paradigm"]
    if paradigm in (MUSHRA, "ranking"):
        return [[]]
    reference = [cid for cid, kind in conditions if kind == "hidden_reference"]
    models = [cid for cid, kind in conditions if kind in ("model", "prerendered")]
    if paradigm in AGAINST_REFERENCE:
        if not reference:
            raise ServiceError(f"a {PARADIGMS[paradigm]} block needs the hidden reference")
        if not models:
            raise ServiceError(f"a {PARADIGMS[paradigm]} block needs at least one model condition")
        return [[reference[0], cid] for cid in models]
    if paradigm in ("ab", "abn"):
        members = (reference[:1] if block.get("with_reference") else []) + models
        if len(members) < 2:
            raise ServiceError(f"an {PARADIGMS[paradigm]} block needs at least two conditions to compare")
        return [list(pair) for pair in itertools.combinations(members, 2)]
    if paradigm == "acr":
        return [[cid] for cid, _kind in conditions]
    raise ServiceError(f"unknown paradigm {paradigm!r}")


def arrange(entries: list[dict[str, Any]], design_of: dict[int, list[int]], rng: random.Random) -> None:
    """Fill in each plan entry's presentation, in place: the order of its conditions
    (``conditions``); against the reference, the reference's id (``reference``); for ABX, which
    of A and B is X (``x``: 0 or 1), balanced per pair over the participant's trials of that
    pair (half each, the odd one at random)."""
    by_pair: dict[tuple[int, ...], list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        order = list(design_of[entry["trial"]])
        rng.shuffle(order)
        entry["conditions"] = order
        if entry["paradigm"] in AGAINST_REFERENCE:
            entry["reference"] = design_of[entry["trial"]][0]
        if entry["paradigm"] == "abx":
            by_pair[tuple(sorted(order))].append(entry)
    for group in by_pair.values():
        xs = [i % 2 for i in range(len(group))]
        if len(group) % 2:
            xs[-1] = rng.randrange(2)
        rng.shuffle(xs)
        for entry, x in zip(group, xs, strict=True):
            entry["x"] = x


def block_of(config: dict, entry: dict[str, Any]) -> dict[str, Any]:
    """The block a plan entry belongs to (entries written before MUSHRA entries carried their
    block: the experiment's MUSHRA block)."""
    listed = blocks(config)
    number = entry.get("block")
    if number is None:
        number = next((n for n, b in enumerate(listed) if b["paradigm"] == paradigm_of(entry)), 0)
    return listed[int(number)]


def paradigm_of(entry: dict[str, Any]) -> str:
    """A plan entry's paradigm (entries written before blocks existed are MUSHRA pages)."""
    return str(entry.get("paradigm") or MUSHRA)


def signal_keys(entry: dict[str, Any]) -> dict[str, int]:
    """A trial's opaque signal keys in page order -> condition id. MUSHRA and ranking: a, b, c,
    ... in the participant's shuffled order; BS.1116: B and C; ABX: A, B and X (X is the audio
    of A or B); AB / ABN: A and B; ACR: the one signal, A; DCR: the model, A (the reference is
    the open one)."""
    paradigm = paradigm_of(entry)
    conditions = entry["conditions"]
    if paradigm == "bs1116":
        return {"b": conditions[0], "c": conditions[1]}
    if paradigm == "abx":
        return {"a": conditions[0], "b": conditions[1], "x": conditions[int(entry["x"])]}
    if paradigm == "dcr":
        # The model; a gold question of the reference against itself plays the reference.
        others = [cid for cid in conditions if cid != entry["reference"]]
        return {"a": others[0] if others else entry["reference"]}
    return {chr(ord("a") + i): cid for i, cid in enumerate(conditions)}


def scale(paradigm: str, block: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The labelled points of a paradigm's answer scale, for the page (translated; an ACR
    block's own labels as the researcher wrote them)."""
    own = (block or {}).get("scale") if paradigm == "acr" else None
    if own:
        return [{"value": n, "label": label} for n, label in enumerate(own, start=1)]
    table = {"bs1116": IMPAIRMENT_SCALE, "acr": ACR_SCALE, "dcr": DCR_SCALE}.get(paradigm, ())
    return [{"value": value, "label": str(label)} for value, label in table]


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FieldError(where, gettext("expected a number"))
    return float(value)


def clean_answer(entry: dict[str, Any], answer: object, n_points: int = 5) -> dict[str, Any]:
    """Check the answer a page sent for a paradigm trial (keys as :func:`signal_keys` gives
    them) and return it as stored, by condition id. FieldError names what is wrong.

    - ``bs1116``: ``{"grades": {"b": g, "c": g}}``, g in 1.0-5.0 (kept to one decimal, the
      scale's resolution, BS.1116-3 §5.2) -> ``{"reference": id, "condition": id,
      "hidden_reference_is": "B"|"C", "grade_reference": g, "grade_condition": g}``
    - ``abx``: ``{"choice": "a"|"b"}`` -> ``{"a": id, "b": id, "x_is": "A"|"B", "answer":
      "A"|"B", "correct": bool}``
    - ``ab`` / ``abn``: ``{"choice": "a"|"b"}`` (``abn`` also ``"none"``) -> ``{"a": id, "b": id,
      "choice": "A"|"B"|"none"}``
    - ``acr`` / ``dcr``: ``{"score": 1..n_points}`` (the block's :func:`points`) ->
      ``{"condition": id, "score": n}``
    - ``ranking``: ``{"ranks": {key: rank}}``, ranks 1..n each once -> ``{"ranks": {id: rank}}``
    """
    paradigm = paradigm_of(entry)
    keys = signal_keys(entry)
    if not isinstance(answer, dict):
        raise FieldError("answer", gettext("expected an object"))
    if paradigm == "bs1116":
        grades = answer.get("grades")
        if not isinstance(grades, dict) or set(grades) != {"b", "c"}:
            raise FieldError("answer.grades", gettext("grade both B and C"))
        graded = {}
        for key in ("b", "c"):
            g = _number(grades[key], f"answer.grades.{key}")
            if not (1.0 <= g <= 5.0):
                raise FieldError(f"answer.grades.{key}", gettext("%(grade)s is outside 1.0-5.0") % {"grade": f"{g:g}"})
            graded[key] = round(g, 1)
        hidden = "b" if keys["b"] == entry["reference"] else "c"
        other = "c" if hidden == "b" else "b"
        return {
            "reference": keys[hidden],
            "condition": keys[other],
            "hidden_reference_is": hidden.upper(),
            "grade_reference": graded[hidden],
            "grade_condition": graded[other],
        }
    if paradigm in ("abx", "ab", "abn"):
        choice = str(answer.get("choice"))
        allowed = ("a", "b", "none") if paradigm == "abn" else ("a", "b")
        if not isinstance(answer.get("choice"), str) or choice not in allowed:
            raise FieldError("answer.choice", gettext("expected one of %(choices)s") % {"choices": ", ".join(allowed)})
        if paradigm == "abx":
            x_is = "A" if int(entry["x"]) == 0 else "B"
            return {
                "a": keys["a"],
                "b": keys["b"],
                "x_is": x_is,
                "answer": choice.upper(),
                "correct": choice.upper() == x_is,
            }
        return {"a": keys["a"], "b": keys["b"], "choice": "none" if choice == "none" else choice.upper()}
    if paradigm in ("acr", "dcr"):
        score = answer.get("score")
        if isinstance(score, bool) or not isinstance(score, int) or not (1 <= score <= n_points):
            raise FieldError(
                "answer.score", gettext("expected a whole number from 1 to %(points)s") % {"points": n_points}
            )
        return {"condition": keys["a"], "score": score}
    if paradigm == "ranking":
        ranks = answer.get("ranks")
        if not isinstance(ranks, dict) or set(ranks) != set(keys):
            raise FieldError("answer.ranks", gettext("rank every signal of the trial"))
        values = []
        for key in keys:
            r = ranks[key]
            if isinstance(r, bool) or not isinstance(r, int):
                raise FieldError(f"answer.ranks.{key}", gettext("expected a whole number"))
            values.append(r)
        if sorted(values) != list(range(1, len(keys) + 1)):
            raise FieldError(
                "answer.ranks", gettext("expected each rank from 1 to %(count)s once") % {"count": len(keys)}
            )
        return {"ranks": {str(keys[k]): int(ranks[k]) for k in keys}}
    raise FieldError("answer", gettext("a %(paradigm)s trial takes no answer object") % {"paradigm": paradigm})


def rules_for(paradigm: str, rules: dict[str, Any]) -> dict[str, Any]:
    """The player rules a paradigm's trial is refereed by: MUSHRA's all; the others keep the
    listening rules (every signal played, for so long, the page's minimum time) but not the
    MUSHRA scale's (one signal at 100, sliders moved only while their signal plays)."""
    if paradigm == MUSHRA:
        return rules
    return {k: v for k, v in rules.items() if k not in ("require_one_100", "only_playing_slider_moves")}
