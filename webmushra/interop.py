"""webMUSHRA interoperability: import a webMUSHRA YAML config, export ``mushra.csv``.

webMUSHRA (Schoeffler et al., "webMUSHRA — A Comprehensive Framework for Web-based
Listening Tests", J. Open Research Software 6(1), 2018) describes a test as a list of
pages. On import:

* ``mushra`` pages become excerpts: the page's ``reference`` is the open reference and
  the hidden reference, each ``stimuli`` entry (``C1: file``) a pre-rendered condition
  named by its key, ``createAnchor35`` / ``createAnchor70`` the BS.1534-3 low-pass
  anchors. Pages with the same stimulus keys and anchors form one experiment; a page
  set over 12 signals per trial (BS.1534-3 §5.3) is split into linked blocks.
* ``bs1116``, ``paired_comparison`` and ``likert_single_stimulus`` /
  ``likert_multi_stimulus`` pages (lists of 2 to 11 responses) become blocks of those
  paradigms (``config["blocks"]``, :mod:`webmushra.paradigms`): ``bs1116``, ``ab`` (``abn``
  when the page sets ``unforced``) and ``acr`` (with the list's labels as its scale). Their
  stimuli map onto excerpts and conditions as a mushra page's do; pages of different types
  that present the same audio share one experiment and its excerpts, one block per type
  (likert pages: per response list) in page order. Every difference from webMUSHRA's page is
  a note of the report.
* ``generic`` pages become texts (the first one the landing description, all of them
  the instructions); ``consent`` pages the consent text; ``volume`` pages switch the
  listening-level page on; the ``finish`` page's ``questionnaire`` becomes ours.
* ``random`` blocks are recorded; trial order is randomised per participant anyway.
* Every other page type (and a likert page whose list has fewer than 2 or more than 11 points) is
  reported by type, id and reason: the import refuses unless
  ``allow_partial`` is set, and then lists what it skipped.

Export writes the columns of webMUSHRA's ``service/write.php`` for mushra pages:
``session_test_id, session_uuid, <questionnaire names>, trial_id, rating_stimulus,
rating_score, rating_time, rating_comment``, naming the hidden reference ``reference``
and the anchors ``anchor35`` / ``anchor70`` as webMUSHRA does.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import transaction
from django.utils.html import strip_tags

from . import errors, paradigms, rules
from .models import Experiment
from .results_csv import (  # noqa: F401  (the importer's module is where callers look for them)
    MUSHRA_COLUMNS_AFTER,
    MUSHRA_COLUMNS_BEFORE,
    STIMULUS_NAMES,
    WEBMUSHRA_FILES,
    mushra_csv,
    session_uuid,
    stimulus_name,
    webmushra_csvs,
    webmushra_files_for,
)
from .rules import MAX_SIGNALS_PER_TRIAL
from .services import experiments, files, uploads

#: Page types with a counterpart here; everything else is reported as unsupported.
SUPPORTED_PAGES = (
    "mushra",
    "generic",
    "finish",
    "volume",
    "consent",
    "bs1116",
    "paired_comparison",
    "likert_single_stimulus",
    "likert_multi_stimulus",
)
#: Page types that hold trials, in the order their paradigms are named in notes.
TEST_PAGES = ("mushra", "bs1116", "paired_comparison", "likert_single_stimulus", "likert_multi_stimulus")
#: webMUSHRA questionnaire types -> ours.
QUESTION_TYPES = {"text": "text", "number": "number", "long_text": "textarea", "likert": "select"}


class ImportRefused(errors.ServiceError):
    """The config uses page types this platform does not run (and partial import was not asked for)."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Page:
    """One page of the flattened config, with the random block it sits in (if any)."""

    type: str
    id: str
    data: dict
    random_block: int | None = None


@dataclass
class ImportReport:
    """What an import kept, changed and skipped, in words a researcher can act on."""

    test_name: str = ""
    test_id: str = ""
    unsupported: list[tuple[str, str]] = field(default_factory=list)
    #: Why a page of a supported type was not imported (``type page 'id': reason``).
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Questions that ask for something that identifies a person (``personal_data_warnings``).
    warnings: list[str] = field(default_factory=list)

    def unsupported_text(self) -> str:
        return ", ".join(f"{t} page {i!r}" for t, i in self.unsupported)

    def lines(self) -> list[str]:
        out = []
        if self.unsupported:
            out.append(f"Skipped unsupported pages: {self.unsupported_text()}.")
        return out + self.reasons + self.warnings + self.notes


@dataclass
class ImportResult:
    experiments: list[Experiment]
    report: ImportReport


# --------------------------------------------------------------------------- reading


#: Larger configs are refused before parsing (webMUSHRA configs are a few KB).
MAX_CONFIG_BYTES = 1_000_000


def _refuse_aliases(text: str, source: str) -> None:
    """Refuse YAML aliases: shared nodes expand multiplicatively ("billion laughs")."""
    try:
        for event in yaml.parse(text):
            if isinstance(event, yaml.AliasEvent):
                raise errors.ServiceError(
                    f"{source}: YAML aliases (*{event.anchor}) are not accepted; write the values out"
                )
    except yaml.YAMLError:
        return  # a syntax error is reported by the parse below, with its line


def load_config(text: str | bytes, source: str = "config") -> dict:
    """Parse a webMUSHRA YAML config and check its top-level shape."""
    if len(text) > MAX_CONFIG_BYTES:
        raise errors.ServiceError(f"{source}: {len(text)} bytes is too large for a webMUSHRA config")
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig", errors="replace")
    _refuse_aliases(text, source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # webMUSHRA reads its configs with js-yaml, which accepts ": " inside plain values
        # (its own default.yaml relies on it); quote such values and try once more.
        try:
            data = yaml.safe_load(quote_plain_values(text))
        except yaml.YAMLError:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise errors.ServiceError(f"{source}: not valid YAML{where}") from None
    if not isinstance(data, dict) or not isinstance(data.get("pages"), list):
        raise errors.ServiceError(f"{source}: not a webMUSHRA config (no 'pages' list)")
    return data


_KEY_VALUE = re.compile(r"^(\s*(?:- )?[A-Za-z_][\w-]*:[ \t]+)(.*?)\s*$")


def quote_plain_values(text: str) -> str:
    """Single-quote plain ``key: value`` scalars whose value itself contains ": "."""
    out = []
    for line in text.splitlines():
        m = _KEY_VALUE.match(line)
        if m and ": " in m.group(2) and m.group(2)[:1] not in "'\"[{|>&*!#":
            line = m.group(1) + "'" + m.group(2).replace("'", "''") + "'"
        out.append(line)
    return "\n".join(out) + "\n"


def flatten_pages(pages: list, source: str = "config") -> list[Page]:
    """Pages in config order; ``[random, ...]`` blocks (and nested page groups) are unrolled."""
    out: list[Page] = []
    counter = [0]

    def walk(items: list, block: int | None) -> None:
        items = list(items)
        if items and items[0] == "random":
            counter[0] += 1
            block = counter[0]
            items = items[1:]
        for item in items:
            if isinstance(item, list):
                walk(item, block)
            elif isinstance(item, dict):
                kind = str(item.get("type", "")).strip()
                if not kind:
                    raise errors.ServiceError(f"{source}: a page has no type ({item.get('id', 'no id')})")
                out.append(
                    Page(type=kind, id=str(item.get("id") or item.get("name") or kind), data=item, random_block=block)
                )
            elif item is None:
                continue
            else:
                raise errors.ServiceError(f"{source}: unexpected entry {item!r} in the page list")

    walk(pages, None)
    return out


def questionnaire_from(finish: dict) -> list[dict]:
    """The finish page's questionnaire in our field format (likert -> select)."""
    fields = []
    for q in finish.get("questionnaire") or []:
        kind = QUESTION_TYPES.get(str(q.get("type", "text")))
        if kind is None:
            raise errors.ServiceError(
                f"finish page: questionnaire type {q.get('type')!r} of {q.get('name')!r} is not supported"
            )
        options = [str(r.get("value", r.get("label", ""))) for r in q.get("response") or []]
        fields.append(
            {
                "name": str(q.get("name", "")),
                "label": str(q.get("label") or q.get("name", "")),
                "type": kind,
                "options": options,
                "required": not bool(q.get("optional", False)),
            }
        )
    return rules.validate_questionnaire(fields)


#: What a questionnaire question asks for when its name or label says so: a personal identifier
#: (GDPR Art. 4(1)), which ties the session's ratings, device data and answers to a person.
PERSONAL_IDENTIFIERS = (
    (re.compile(r"e-?\s?mail|\bmail\b", re.I), "an e-mail address"),
    (re.compile(r"(?<![a-z])(tele)?phone|mobile|\btel\b", re.I), "a telephone number"),
    (re.compile(r"^(full|first|last|given|family|sur)?[ _-]?name$|\byour name\b|surname", re.I), "a name"),
    (re.compile(r"\baddress\b|street|post\s?code|zip\s?code", re.I), "a postal address"),
    (re.compile(r"birth\s?(date|day)|date of birth|\bdob\b", re.I), "a date of birth"),
)


def personal_data_warnings(questionnaire: list[dict]) -> list[str]:
    """A warning for each question whose name or label asks for a personal identifier."""
    out = []
    for q in questionnaire:
        for text in (q.get("name", ""), q.get("label", "")):
            what = next((w for pattern, w in PERSONAL_IDENTIFIERS if pattern.search(str(text))), None)
            if what:
                out.append(
                    f"Questionnaire question {q.get('name')!r} ({q.get('label')!r}) asks for {what}: it identifies "
                    "the participant, so their ratings and device data are no longer anonymous. Remove it in the "
                    "settings unless you need it, and say in the consent text that you collect it."
                )
                break
    return out


def _text(value: Any) -> str:
    return strip_tags(str(value or "")).strip()


def _chunks(keys: list[str], size: int) -> list[list[str]]:
    """Split keys into the fewest near-equal chunks of at most ``size``."""
    n = -(-len(keys) // size)
    base, extra = divmod(len(keys), n)
    out, start = [], 0
    for i in range(n):
        end = start + base + (1 if i < extra else 0)
        out.append(keys[start:end])
        start = end
    return out


def page_paradigm(page: Page) -> tuple[str | None, str]:
    """The paradigm a test page becomes here; None with the reason when the page's variant has
    no counterpart (an empty reason: the page type itself has none)."""
    if page.type == "mushra":
        return paradigms.MUSHRA, ""
    if page.type == "bs1116":
        return "bs1116", ""
    if page.type == "paired_comparison":
        # webMUSHRA's PairedComparisonPage.js adds the third choice when ``unforced`` is set (its text the label).
        return ("abn" if page.data.get("unforced") else "ab"), ""
    if page.type in ("likert_single_stimulus", "likert_multi_stimulus"):
        labels = likert_labels(page)
        low, high = paradigms.SCALE_POINTS
        if not (low <= len(labels) <= high):
            return None, (
                f"a {len(labels)}-point response list; ACR blocks take lists of {low} to {high} points, so this "
                "Likert scale has no counterpart here"
            )
        if any(not label or len(label) > paradigms.MAX_SCALE_LABEL for label in labels):
            return None, f"a response without a label or with one longer than {paradigms.MAX_SCALE_LABEL} characters"
        if len({label.casefold() for label in labels}) != len(labels):
            return None, "two responses with the same label"
        return "acr", ""
    return None, ""


def likert_labels(page: Page) -> list[str]:
    """A likert page's responses in list order, each by its label (its value where it has none)."""
    responses = page.data.get("response")
    if not isinstance(responses, list):
        return []
    return [" ".join(_text(r.get("label") or r.get("value") if isinstance(r, dict) else r).split()) for r in responses]


def _scale_of(page: Page) -> list[str]:
    """An ACR block's ``scale`` for a likert page: [] where its labels are ITU-T P.800's five."""
    labels = likert_labels(page)
    p800 = [str(label).casefold() for _value, label in paradigms.ACR_SCALE]
    return [] if [label.casefold() for label in labels] == p800 else labels


#: Joins a paradigm and an ACR scale in a grouping key (likert pages with other scales are other blocks).
_SCALE_SEP = "\x1f"


def _group_name(page: Page, paradigm: str) -> str:
    """The block a page joins: its paradigm, and for a likert page its scale as well."""
    return _SCALE_SEP.join([paradigm, *_scale_of(page)]) if paradigm == "acr" else paradigm


def _paradigm_name(group: str) -> str:
    return group.split(_SCALE_SEP)[0]


def _reference_name(page: Page) -> Any:
    """The page's reference file; likert pages have none, so their first stimulus stands in."""
    if page.data.get("reference"):
        return page.data["reference"]
    return next(iter(dict(page.data.get("stimuli") or {}).values()), None)


def _audio_of(page: Page, keys: tuple[str, ...]) -> tuple:
    """What a page presents: its reference (None for a likert page) and its stimuli's files."""
    stimuli = page.data["stimuli"]
    ref = page.data.get("reference")
    return (str(ref).strip() if ref else None, tuple(str(stimuli[k]).strip() for k in keys))


@dataclass
class _Plan:
    """One experiment to build (before the 12-signal split): its signals, the pages that give
    its excerpts, its blocks (empty: the MUSHRA block of old) and where every page went."""

    keys: tuple[str, ...]
    anchors: tuple[bool, bool]
    pages: list[Page]
    blocks: list[dict]
    page_map: list[dict]


def _ids(pages: list[Page]) -> str:
    return ", ".join(repr(p.id) for p in pages)


def _block_for(paradigm: str, pages: list[Page], keys: tuple[str, ...], report: ImportReport) -> dict:
    """The block of a paradigm's pages; what differs from webMUSHRA's pages becomes a note."""
    block: dict[str, Any] = {"paradigm": paradigm}
    if paradigm == paradigms.MUSHRA:
        return block
    contents = [_text(p.data.get("content")) for p in pages]
    block["instructions"] = contents[0][:5000]
    where = f"{pages[0].type} page(s) {_ids(pages)}"
    if len(set(contents)) > 1:
        report.notes.append(f"{where}: the block shows the first page's text on every trial; the others' are not kept.")
    if paradigm == "bs1116":
        report.notes.append(
            f"{where}: grades are kept to one decimal (ITU-R BS.1116-3 §5.2); webMUSHRA's sliders move in steps "
            "of 0.01."
        )
        if any(p.data.get("createAnchor35") or p.data.get("createAnchor70") for p in pages):
            report.notes.append(
                f"{where}: createAnchor35/createAnchor70 ignored; webMUSHRA's bs1116 pages present no anchors either."
            )
    elif paradigm in ("ab", "abn"):
        block["with_reference"] = True
        n = len(keys) + 1
        report.notes.append(
            f"{where}: webMUSHRA plays the open reference and asks which of A and B is the reference (scored "
            f"correct or incorrect{', or undecided' if paradigm == 'abn' else ''}); here the "
            f"{paradigms.PARADIGMS[paradigm]} block asks which of A and B is preferred, with no open reference, "
            f"and pairs every two of the hidden reference and the stimuli ({n * (n - 1) // 2} pairs per excerpt "
            f"where webMUSHRA pairs each of the {len(keys)} stimuli with the reference)."
        )
        if paradigm == "abn":
            labels = sorted({str(p.data.get("unforced")) for p in pages})
            report.notes.append(
                f'{where}: the third choice is this platform\'s "no preference", not {", ".join(map(repr, labels))}.'
            )
    elif paradigm == "acr":
        labels = likert_labels(pages[0])
        block["scale"] = _scale_of(pages[0])
        shown = (
            "the page's own labels (an ACR block with a category scale of its own)"
            if block["scale"]
            else "the labels of ITU-T P.800 Annex B, which they are"
        )
        report.notes.append(
            f"{where}: the {len(labels)} responses ({', '.join(labels)}) are ACR scores 1 to {len(labels)} in list "
            f"order (webMUSHRA's lss.csv / lms.csv hold the response's value; here the score), shown with {shown}."
        )
        report.notes.append(
            f"{where}: the page has no reference, so its first stimulus ({keys[0]}) is the excerpt's reference; the "
            "ACR block rates the hidden reference (that file) too, one trial per excerpt more than webMUSHRA shows."
        )
        if any(p.data.get("mustRate") is False or "mustRate" not in p.data for p in pages):
            report.notes.append(f"{where}: every ACR trial needs its answer here (as with mustRate: true).")
        multi = [p for p in pages if p.type == "likert_multi_stimulus"]
        if multi:
            report.notes.append(
                f"likert_multi_stimulus page(s) {_ids(multi)}: webMUSHRA rates the stimuli side by side on one page; "
                "here each is rated alone, in a trial of its own."
            )
    return block


def _plan(tests: list[tuple[Page, str]], source: str, report: ImportReport) -> list[_Plan]:
    """The experiments the test pages become. Pages with the same stimulus names (and, for mushra
    pages, anchors) share one experiment's conditions; in it, the paradigms whose pages present the
    same audio share its excerpts (one block each, in page order, since every block runs over every
    excerpt). A paradigm whose pages present other audio gets an experiment of its own."""
    groups: dict[tuple, list[tuple[Page, str]]] = {}
    for p, paradigm in tests:
        stimuli = p.data.get("stimuli") or {}
        if not isinstance(stimuli, dict) or not stimuli:
            raise errors.ServiceError(f"{source}: {p.type} page {p.id!r} has no stimuli")
        if paradigm != "acr" and not p.data.get("reference"):
            raise errors.ServiceError(f"{source}: {p.type} page {p.id!r} has no reference")
        mushra = paradigm == paradigms.MUSHRA
        key = (
            tuple(str(k) for k in stimuli),
            mushra and bool(p.data.get("createAnchor35")),
            mushra and bool(p.data.get("createAnchor70")),
        )
        groups.setdefault(key, []).append((p, paradigm))
    plans = []
    for (keys, a35, a70), members in groups.items():
        by_paradigm: dict[str, list[Page]] = {}
        for p, paradigm in members:
            by_paradigm.setdefault(_group_name(p, paradigm), []).append(p)
        clusters: list[tuple[Counter, list[str]]] = []
        for paradigm, pages in by_paradigm.items():
            audio = Counter(_audio_of(p, keys) for p in pages)
            same = next((c for c in clusters if c[0] == audio), None)
            if same:
                same[1].append(paradigm)
            else:
                clusters.append((audio, [paradigm]))
        if len(clusters) > 1:
            report.notes.append(
                "Pages with the same stimulus names but other audio ("
                + "; ".join(_ids([p for n in names for p in by_paradigm[n]]) for _a, names in clusters)
                + ") became separate experiments: every block of an experiment runs over all its excerpts."
            )
        for _audio, names in clusters:
            first = by_paradigm[names[0]]
            page_map = []
            for name in names:
                free: dict[tuple, list[Page]] = {}
                for p in first:
                    free.setdefault(_audio_of(p, keys), []).append(p)
                for p in by_paradigm[name]:
                    page_map.append(
                        {
                            "page": p.id,
                            "type": p.type,
                            "paradigm": _paradigm_name(name),
                            "excerpt": free[_audio_of(p, keys)].pop(0).id,
                        }
                    )
            if len(names) > 1:
                report.notes.append(
                    f"Pages {_ids([p for n in names for p in by_paradigm[n]])} present the same audio: "
                    f"{len(first)} excerpt(s) ({_ids(first)}) serve the blocks "
                    f"{', '.join(_paradigm_name(n) for n in names)}, run in this order."
                )
            blocks = (
                []
                if names == [paradigms.MUSHRA]
                else [_block_for(_paradigm_name(n), by_paradigm[n], keys, report) for n in names]
            )
            plans.append(_Plan(keys=keys, anchors=(a35, a70), pages=first, blocks=blocks, page_map=page_map))
    return plans


def _plan_config(config: dict, plan: _Plan) -> dict:
    """The experiment's config: the import's, with the plan's blocks and page map when it has blocks."""
    if not plan.blocks:
        return config
    return {
        **config,
        "blocks": paradigms.clean_blocks(plan.blocks),
        "webmushra": {**config["webmushra"], "page_map": plan.page_map},
    }


# --------------------------------------------------------------------------- importing


def import_config(
    *,
    owner,
    text: str | bytes,
    resolve: Callable[[str], Path | None],
    allow_partial: bool = False,
    source: str = "config",
) -> ImportResult:
    """Create experiments from a webMUSHRA config; ``resolve`` maps a config path to a local file.

    Nothing is left behind when any page, file or setting is refused.
    """
    config = load_config(text, source)
    pages = flatten_pages(config["pages"], source)
    report = ImportReport(test_name=str(config.get("testname") or ""), test_id=str(config.get("testId") or ""))
    tests: list[tuple[Page, str]] = []
    for p in pages:
        paradigm, reason = page_paradigm(p) if p.type in TEST_PAGES else (None, "")
        if paradigm:
            tests.append((p, paradigm))
        elif p.type not in SUPPORTED_PAGES or reason:
            report.unsupported.append((p.type, p.id))
            if reason:
                report.reasons.append(f"{p.type} page {p.id!r}: {reason}.")
    if report.unsupported and not allow_partial:
        raise ImportRefused(
            f"{source}: unsupported page types: {report.unsupported_text()}. "
            + "".join(f"{r} " for r in report.reasons)
            + "Import the supported part with partial import, or remove those pages.",
            report,
        )
    mushra = [p for p, paradigm in tests if paradigm == paradigms.MUSHRA]
    if not tests:
        raise ImportRefused(f"{source}: no mushra, bs1116, paired_comparison or likert page to import", report)

    generic = [p for p in pages if p.type == "generic"]
    consent = [p for p in pages if p.type == "consent"]
    finish = next((p for p in pages if p.type == "finish"), None)
    questionnaire = questionnaire_from(finish.data) if finish else []
    report.warnings = personal_data_warnings(questionnaire)
    random_blocks: dict[int, list[str]] = {}
    for p in pages:
        if p.random_block is not None:
            random_blocks.setdefault(p.random_block, []).append(p.id)
    if random_blocks:
        report.notes.append("Random blocks recorded; here every participant gets every trial in a random order.")
    elif len(mushra) > 1:
        report.notes.append(
            "webMUSHRA shows these pages in a fixed order; here trial order is randomised "
            "per participant (ITU-R BS.1534-3 §3)."
        )
    plans = _plan(tests, source, report)
    if any(plan.blocks for plan in plans) and random_blocks:
        report.notes.append(
            "Blocks run in page order (trials in a random order within each block), whatever the random blocks say."
        )
    for p in mushra:
        ignored = [k for k in ("showConditionNames",) if p.data.get(k)]
        if ignored:
            report.notes.append(f"mushra page {p.id!r}: {', '.join(ignored)} ignored; conditions stay blinded.")
        if p.data.get("randomize") is False:
            report.notes.append(f"mushra page {p.id!r}: randomize: false ignored; signal order is always shuffled.")
    volume = any(p.type == "volume" for p in pages)

    base_config = {
        "questionnaire": questionnaire,
        "training": False,
        "level_setting": volume,
        "pages": [
            {
                "id": p.id,
                "type": p.type,
                "name": str(p.data.get("name") or ""),
                "content": str(p.data.get("content") or ""),
            }
            for p in pages
            if p.type in ("generic", "consent")
        ],
        "webmushra": {
            "testId": report.test_id,
            "testname": report.test_name,
            "page_order": [p.id for p in pages],
            "random_blocks": list(random_blocks.values()),
            "skipped": [{"type": t, "id": i} for t, i in report.unsupported],
        },
    }
    if finish and finish.data.get("content"):
        base_config["finish_text"] = _text(finish.data["content"])
    title = report.test_name or report.test_id or Path(source).stem
    description = _text(generic[0].data.get("content")) if generic else ""
    instructions = "\n\n".join(_text(p.data.get("content")) for p in generic[1:] if p.data.get("content")) or _text(
        (mushra or [tests[0][0]])[0].data.get("content")
    )
    consent_text = "\n\n".join(_text(p.data.get("content")) for p in consent)

    _check_audio_files(resolve, [p for p, _ in tests], source)
    stored: list[str] = []
    experiments: list[Experiment] = []
    try:
        with transaction.atomic():
            part = 0
            for plan in plans:
                keys, (a35, a70), group_pages = plan.keys, plan.anchors, plan.pages
                fixed = 1 + int(a35) + int(a70)
                for chunk in _chunks(list(keys), MAX_SIGNALS_PER_TRIAL - fixed):
                    part += 1
                    experiments.append(
                        _build_experiment(
                            owner=owner,
                            title=title,
                            part=part,
                            chunk=chunk,
                            anchors=(a35, a70),
                            pages=group_pages,
                            resolve=resolve,
                            source=source,
                            description=description,
                            instructions=instructions,
                            consent_text=consent_text,
                            config=_plan_config(base_config, plan),
                            stored=stored,
                        )
                    )
                if len(keys) + fixed > MAX_SIGNALS_PER_TRIAL:
                    report.notes.append(
                        f"pages {', '.join(p.id for p in group_pages)}: {len(keys) + fixed} signals per trial exceed "
                        f"the {MAX_SIGNALS_PER_TRIAL} of ITU-R BS.1534-3 §5.3; split into blocks of at most "
                        f"{MAX_SIGNALS_PER_TRIAL}."
                    )
                    if any(b["paradigm"] in ("ab", "abn") for b in plan.blocks):
                        report.notes.append(
                            f"pages {', '.join(p.id for p in group_pages)}: the AB blocks pair only the stimuli of "
                            "the same part; pairs across the parts are not compared."
                        )
            if len(experiments) > 1:
                root = experiments[0]
                for i, e in enumerate(experiments, start=1):
                    e.config = {**e.config, "block": i, "block_of": root.pk}
                    e.save(update_fields=["config"])
                report.notes.append(
                    f"The pages differ in their signals, so they became {len(experiments)} linked experiments (blocks)."
                )
            for e in experiments:
                e.config = {**e.config, "import_notes": report.lines()}
                e.save(update_fields=["config"])
    except BaseException:
        files.delete_stored(*stored)
        raise
    return ImportResult(experiments=experiments, report=report)


def _build_experiment(
    *,
    owner,
    title: str,
    part: int,
    chunk: list[str],
    anchors: tuple[bool, bool],
    pages: list[Page],
    resolve: Callable[[str], Path | None],
    source: str,
    description: str,
    instructions: str,
    consent_text: str,
    config: dict,
    stored: list[str],
) -> Experiment:
    from modelrunner.audio import check_audio
    from modelrunner.errors import ModelRunnerError

    ref_path = _resolve(resolve, _reference_name(pages[0]), pages[0], source)
    try:
        sample_rate = check_audio(ref_path).sample_rate  # in blocks: the rate, never the samples held
    except ModelRunnerError as exc:
        raise errors.ServiceError(f"{_reference_name(pages[0])}: {exc}") from None
    experiment = experiments.create_experiment(
        owner=owner,
        title=(title if part == 1 else f"{title} — part {part}")[:200],
        sample_rate=sample_rate,
        description=description,
        anchors=False,
        instructions=instructions,
        consent_text=consent_text,
        config=dict(config),
    )
    experiments.set_anchors(experiment=experiment, anchor35=anchors[0], anchor70=anchors[1])
    conditions = {key: experiments.add_prerendered_condition(experiment=experiment, label=key) for key in chunk}
    for page in pages:
        ref = _resolve(resolve, _reference_name(page), page, source)
        try:
            excerpt = uploads.add_excerpt(experiment=experiment, name=page.id, dry=ref, reference=ref)
        except errors.ServiceError as exc:
            raise errors.ServiceError(f"{page.type} page {page.id!r}: {exc}") from None
        stored += [excerpt.dry_file.name, excerpt.reference_file.name]
        for key in chunk:
            path = _resolve(resolve, page.data["stimuli"][key], page, source)
            try:
                row = uploads.add_prerendered_audio(condition=conditions[key], excerpt=excerpt, audio=path)
            except errors.ServiceError as exc:
                raise errors.ServiceError(f"{page.type} page {page.id!r}, stimulus {key}: {exc}") from None
            stored.append(row.file.name)
    return experiment


def _check_audio_files(resolve: Callable[[str], Path | None], pages: list[Page], source: str) -> None:
    """Every audio file the test pages name, checked before anything is stored; all the
    problems are listed at once (not the first one per attempt)."""
    problems: list[str] = []
    for page in pages:
        reference = [page.data["reference"]] if page.data.get("reference") else []
        names = [*reference, *dict(page.data.get("stimuli") or {}).values()]
        for name in names:
            try:
                _resolve(resolve, name, page, source)
            except errors.ServiceError as exc:
                problems.append(str(exc).removeprefix(f"{source}: "))
    if problems:
        listed = "; ".join(problems[:50]) + (f"; and {len(problems) - 50} more" if len(problems) > 50 else "")
        raise errors.ServiceError(f"{source}: {len(problems)} audio file(s) missing or unusable: {listed}")


def _resolve(resolve: Callable[[str], Path | None], name: Any, page: Page, source: str) -> Path:
    text = str(name).strip()
    parts = Path(text.replace("\\", "/")).parts
    if Path(text).is_absolute() or text.startswith(("/", "\\")) or ".." in parts:
        raise errors.ServiceError(f"{source}: {text} (page {page.id!r}) points outside the config's folder")
    path = resolve(text)
    if path is None or not Path(path).is_file():
        raise errors.ServiceError(
            f"{source}: {str(name).strip()} (page {page.id!r}) was not found among the audio files"
        )
    return Path(path)


def directory_resolver(config_path: Path, root: Path | None = None) -> Callable[[str], Path | None]:
    """Resolve config paths as webMUSHRA does (relative to its root, the parent of ``configs/``),
    then relative to the config's folder, then by file name below it."""
    config_path = Path(config_path).resolve()
    roots = [r for r in (root, config_path.parent.parent, config_path.parent) if r is not None]

    def resolve(name: str) -> Path | None:
        for r in roots:
            base = Path(r).resolve()
            candidate = (base / name).resolve()
            # Never follow a path (or a link) out of the webMUSHRA folder.
            if candidate.is_relative_to(base) and candidate.is_file():
                return candidate
        matches = sorted(config_path.parent.rglob(Path(name).name))
        return matches[0] if matches else None

    return resolve


def import_directory(
    *, owner, config_path: str | os.PathLike, root: str | os.PathLike | None = None, allow_partial: bool = False
) -> ImportResult:
    """Import a webMUSHRA config from disk (audio paths as in the config)."""
    config_path = Path(config_path)
    return import_config(
        owner=owner,
        text=config_path.read_bytes(),
        allow_partial=allow_partial,
        resolve=directory_resolver(config_path, Path(root) if root else None),
        source=config_path.name,
    )


def import_uploads(*, owner, config, audio: list, allow_partial: bool = False) -> ImportResult:
    """Import an uploaded config with its uploaded audio (files matched by name, or one ZIP)."""
    folder = Path(tempfile.mkdtemp(prefix="webmushra-", dir=files.tmp_dir()))
    try:
        by_name: dict[str, Path] = {}
        for upload in audio:
            name = Path(upload.name).name
            target = folder / f"{len(by_name)}-{name}"
            with open(target, "wb") as out:
                for chunk in upload.chunks():
                    out.write(chunk)
            if name.lower().endswith(".zip"):
                _unzip(target, folder / f"zip-{len(by_name)}", by_name, name)
            else:
                by_name[name] = target
        text = b"".join(config.chunks())

        def resolve(path: str) -> Path | None:
            name = Path(path).name
            return by_name.get(name) or next((p for n, p in by_name.items() if n.lower() == name.lower()), None)

        return import_config(
            owner=owner, text=text, resolve=resolve, allow_partial=allow_partial, source=Path(config.name).name
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _unzip(archive: Path, into: Path, by_name: dict[str, Path], source: str) -> None:
    limit = settings.MAX_UPLOAD_MB * 1024 * 1024
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > limit:
                raise errors.ServiceError(f"{source}: unpacks to more than {settings.MAX_UPLOAD_MB} MB")
            into.mkdir()
            for i, m in enumerate(members):
                name = Path(m.filename).name
                if not name or name.startswith("."):
                    continue
                # Never trust member paths: each file gets a flat, numbered name.
                target = into / f"{i}-{name}"
                with zf.open(m) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                by_name.setdefault(name, target)
    except zipfile.BadZipFile:
        raise errors.ServiceError(f"{source}: not a readable ZIP file") from None


# --------------------------------------------------------------------------- exporting
