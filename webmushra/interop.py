"""webMUSHRA interoperability: import a webMUSHRA YAML config, export ``mushra.csv``.

webMUSHRA (Schoeffler et al., "webMUSHRA — A Comprehensive Framework for Web-based
Listening Tests", J. Open Research Software 6(1), 2018) describes a test as a list of
pages. On import:

* ``mushra`` pages become excerpts: the page's ``reference`` is the open reference and
  the hidden reference, each ``stimuli`` entry (``C1: file``) a pre-rendered condition
  named by its key, ``createAnchor35`` / ``createAnchor70`` the BS.1534-3 low-pass
  anchors. Pages with the same stimulus keys and anchors form one experiment; a page
  set over 12 signals per trial (BS.1534-3 §5.3) is split into linked blocks.
* ``generic`` pages become texts (the first one the landing description, all of them
  the instructions); ``consent`` pages the consent text; ``volume`` pages switch the
  listening-level page on; the ``finish`` page's ``questionnaire`` becomes ours.
* ``random`` blocks are recorded; trial order is randomised per participant anyway.
* Every other page type is reported by type and id: the import refuses unless
  ``allow_partial`` is set, and then lists what it skipped.

Export writes the columns of webMUSHRA's ``service/write.php`` for mushra pages:
``session_test_id, session_uuid, <questionnaire names>, trial_id, rating_stimulus,
rating_score, rating_time, rating_comment``, naming the hidden reference ``reference``
and the anchors ``anchor35`` / ``anchor70`` as webMUSHRA does.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import transaction
from django.utils.html import strip_tags

from . import errors, rules
from .models import ConditionKind, Experiment, Participant, Rating
from .rules import MAX_SIGNALS_PER_TRIAL
from .selectors import QUALITY_COLUMNS, csv_cell, flag_codes
from .services import experiments, files, uploads

#: Page types with a counterpart here; everything else is reported as unsupported.
SUPPORTED_PAGES = ("mushra", "generic", "finish", "volume", "consent")
#: webMUSHRA questionnaire types -> ours.
QUESTION_TYPES = {"text": "text", "number": "number", "long_text": "textarea", "likert": "select"}
#: How webMUSHRA names the signals it adds itself.
STIMULUS_NAMES = {
    ConditionKind.HIDDEN_REFERENCE: "reference",
    ConditionKind.ANCHOR_35: "anchor35",
    ConditionKind.ANCHOR_70: "anchor70",
}
#: webMUSHRA's mushra.csv (service/write.php): the test id, the questionnaire's answers, then
#: the session's UUID and one row per rated stimulus.
MUSHRA_COLUMNS_BEFORE = ["session_test_id"]
MUSHRA_COLUMNS_AFTER = ["session_uuid", "trial_id", "rating_stimulus", "rating_score", "rating_time", "rating_comment"]


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
    notes: list[str] = field(default_factory=list)
    #: Questions that ask for something that identifies a person (``personal_data_warnings``).
    warnings: list[str] = field(default_factory=list)

    def unsupported_text(self) -> str:
        return ", ".join(f"{t} page {i!r}" for t, i in self.unsupported)

    def lines(self) -> list[str]:
        out = []
        if self.unsupported:
            out.append(f"Skipped unsupported pages: {self.unsupported_text()}.")
        return out + self.warnings + self.notes


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
    report.unsupported = [(p.type, p.id) for p in pages if p.type not in SUPPORTED_PAGES]
    if report.unsupported and not allow_partial:
        raise ImportRefused(
            f"{source}: unsupported page types: {report.unsupported_text()}. "
            "Import the supported part with partial import, or remove those pages.",
            report,
        )
    mushra = [p for p in pages if p.type == "mushra"]
    if not mushra:
        raise ImportRefused(f"{source}: no mushra page to import", report)

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
    for p in mushra:
        ignored = [k for k in ("showConditionNames",) if p.data.get(k)]
        if ignored:
            report.notes.append(f"mushra page {p.id!r}: {', '.join(ignored)} ignored; conditions stay blinded.")
        if p.data.get("randomize") is False:
            report.notes.append(f"mushra page {p.id!r}: randomize: false ignored; signal order is always shuffled.")
    volume = any(p.type == "volume" for p in pages)

    # Pages with the same signals form one experiment (conditions are shared by every trial).
    groups: dict[tuple, list[Page]] = {}
    for p in mushra:
        stimuli = p.data.get("stimuli") or {}
        if not isinstance(stimuli, dict) or not stimuli:
            raise errors.ServiceError(f"{source}: mushra page {p.id!r} has no stimuli")
        if not p.data.get("reference"):
            raise errors.ServiceError(f"{source}: mushra page {p.id!r} has no reference")
        key = (tuple(str(k) for k in stimuli), bool(p.data.get("createAnchor35")), bool(p.data.get("createAnchor70")))
        groups.setdefault(key, []).append(p)

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
        mushra[0].data.get("content")
    )
    consent_text = "\n\n".join(_text(p.data.get("content")) for p in consent)

    _check_audio_files(resolve, mushra, source)
    stored: list[str] = []
    experiments: list[Experiment] = []
    try:
        with transaction.atomic():
            part = 0
            for (keys, a35, a70), group_pages in groups.items():
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
                            config=base_config,
                            stored=stored,
                        )
                    )
                if len(keys) + fixed > MAX_SIGNALS_PER_TRIAL:
                    report.notes.append(
                        f"pages {', '.join(p.id for p in group_pages)}: {len(keys) + fixed} signals per trial exceed "
                        f"the {MAX_SIGNALS_PER_TRIAL} of ITU-R BS.1534-3 §5.3; split into blocks of at most "
                        f"{MAX_SIGNALS_PER_TRIAL}."
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

    ref_path = _resolve(resolve, pages[0].data["reference"], pages[0], source)
    try:
        sample_rate = check_audio(ref_path).sample_rate  # in blocks: the rate, never the samples held
    except ModelRunnerError as exc:
        raise errors.ServiceError(f"{pages[0].data['reference']}: {exc}") from None
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
        ref = _resolve(resolve, page.data["reference"], page, source)
        try:
            excerpt = uploads.add_excerpt(experiment=experiment, name=page.id, dry=ref, reference=ref)
        except errors.ServiceError as exc:
            raise errors.ServiceError(f"mushra page {page.id!r}: {exc}") from None
        stored += [excerpt.dry_file.name, excerpt.reference_file.name]
        for key in chunk:
            path = _resolve(resolve, page.data["stimuli"][key], page, source)
            try:
                row = uploads.add_prerendered_audio(condition=conditions[key], excerpt=excerpt, audio=path)
            except errors.ServiceError as exc:
                raise errors.ServiceError(f"mushra page {page.id!r}, stimulus {key}: {exc}") from None
            stored.append(row.file.name)
    return experiment


def _check_audio_files(resolve: Callable[[str], Path | None], pages: list[Page], source: str) -> None:
    """Every audio file the mushra pages name, checked before anything is stored; all the
    problems are listed at once (not the first one per attempt)."""
    problems: list[str] = []
    for page in pages:
        names = [page.data.get("reference"), *dict(page.data.get("stimuli") or {}).values()]
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


def stimulus_name(condition) -> str:
    """The name webMUSHRA would give a signal: reference, anchor35, anchor70 or the condition's own."""
    return STIMULUS_NAMES.get(condition.kind, condition.label)


def session_uuid(participant) -> str:
    """The participant's session as webMUSHRA names one: a UUID (derived from the session's
    private token, so it is stable and tells nothing of the participant or the order)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"webmushra-session:{participant.token}"))


def mushra_csv(experiment: Experiment) -> str:
    """Ratings in webMUSHRA's ``mushra.csv`` layout (one row per rated signal), as its
    ``write.php`` writes it: complete sessions only (webMUSHRA writes a session when it ends)."""
    questions = [q["name"] for q in experiment.config.get("questionnaire") or []]
    test_id = (experiment.config.get("webmushra") or {}).get("testId") or f"experiment-{experiment.pk}"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    # After webMUSHRA's own columns: the trial's flags and the participant's exclusion by hand.
    writer.writerow(MUSHRA_COLUMNS_BEFORE + questions + MUSHRA_COLUMNS_AFTER + QUALITY_COLUMNS)
    ratings = (
        Rating.objects.filter(
            participant__experiment=experiment,
            participant__stage=Participant.Stage.COMPLETED,
            participant__is_pilot=False,
        )
        .select_related("participant", "condition", "trial__excerpt", "response")
        .order_by("participant_id", "response__submitted_at", "condition__position")
    )
    for r in ratings:
        answers = r.participant.questionnaire or {}
        row = (
            [test_id]
            + [answers.get(q, "") for q in questions]
            + [
                session_uuid(r.participant),
                r.trial.excerpt.name,
                stimulus_name(r.condition),
                r.score,
                (r.response.telemetry or {}).get("time_on_page_ms", ""),
                r.response.comment,  # the trial's comment (config["trial_comments"]), on each of its rows
                flag_codes(r.response.flags),
                r.participant.excluded_at is not None,
                r.participant.exclusion_reason,
            ]
        )
        writer.writerow([csv_cell(v) for v in row])
    return buf.getvalue()
