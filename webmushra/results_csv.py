"""webMUSHRA's result files, written from this platform's data: mushra.csv for the MUSHRA
block and, for the other paradigms' blocks, bs1116.csv, paired_comparison.csv, lss.csv and
lms.csv in the columns of webMUSHRA's ``service/write.php`` (docs/api.md).

Kept apart from the importer (``interop``) so that services may write them without importing
the importer, which itself calls services.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from typing import Any

from . import paradigms
from .models import ConditionKind, Experiment, Participant, Rating
from .selectors import QUALITY_COLUMNS, csv_cell, flag_codes

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


# --------------------------------------------------------------------------- other paradigms' results

#: webMUSHRA's result files of its other page types (service/write.php), after ``session_test_id``
#: and the questionnaire's answers. Mapping (docs/interop.md): ``paired_comparison.csv`` holds the
#: ABX trials (webMUSHRA's paired comparison asks which of A and B is the reference; here X plays
#: the reference: ``choice_reference`` is X's signal, the answer ``correct`` / ``incorrect``);
#: ``bs1116.csv`` the BS.1116 trials; ``lss.csv`` (likert single stimulus) the ACR and DCR votes;
#: ``lms.csv`` (likert multi stimulus) the ACR votes grouped per participant and excerpt as one
#: page. AB / ABN preference and ranking have no file in write.php and are not exported here.
PAIRED_COMPARISON_COLUMNS = [
    "trial_id",
    "choice_reference",
    "choice_non_reference",
    "choice_answer",
    "choice_time",
    "choice_comment",
]
BS1116_COLUMNS = [
    "trial_id",
    "rating_reference",
    "rating_non_reference",
    "rating_reference_score",
    "rating_non_reference_score",
    "rating_time",
    "choice_comment",
]
LIKERT_COLUMNS = ["trial_id", "stimuli_rating", "stimuli", "rating_time"]
#: After webMUSHRA's own columns: the session (as in mushra.csv), the trial's flags and the
#: participant's exclusion by hand.
PARADIGM_EXPORT_EXTRA = ["session_uuid", *QUALITY_COLUMNS]


def _paradigm_export(
    experiment: Experiment,
    paradigms_: tuple[str, ...],
    columns: list[str],
    cells: Callable[[Any, dict[int, Any]], list[list[Any]]],
    page: Callable[[Any], Any] | None = None,
) -> str:
    """A webMUSHRA result file of complete, non-pilot sessions' test trials of ``paradigms_``, in
    the order answered (``page``: grouped by this key, stably): ``cells(response, conditions)``
    gives the rows' values for ``columns``."""
    from .paradigm_data import answered

    questions = [q["name"] for q in experiment.config.get("questionnaire") or []]
    test_id = (experiment.config.get("webmushra") or {}).get("testId") or f"experiment-{experiment.pk}"
    conditions = {c.pk: c for c in experiment.conditions.all()}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MUSHRA_COLUMNS_BEFORE + questions + columns + PARADIGM_EXPORT_EXTRA)
    responses = list(answered(experiment, paradigms_, drop_excluded=False, completed_only=True))
    for r in sorted(responses, key=page) if page is not None else responses:
        answers = r.participant.questionnaire or {}
        before = [test_id] + [answers.get(q, "") for q in questions]
        after = [
            session_uuid(r.participant),
            flag_codes(r.flags),
            r.participant.excluded_at is not None,
            r.participant.exclusion_reason,
        ]
        for values in cells(r, conditions):
            writer.writerow([csv_cell(v) for v in before + values + after])
    return buf.getvalue()


def _page_time(response: Any) -> Any:
    return (response.telemetry or {}).get("time_on_page_ms", "")


def paired_comparison_csv(experiment: Experiment) -> str:
    """ABX trials in webMUSHRA's ``paired_comparison.csv`` layout (X as the reference)."""

    def cells(r: Any, conditions: dict[int, Any]) -> list[list[Any]]:
        a = r.answer
        x, other = (a["a"], a["b"]) if a["x_is"] == "A" else (a["b"], a["a"])
        return [
            [
                r.trial.excerpt.name,
                stimulus_name(conditions[int(x)]),
                stimulus_name(conditions[int(other)]),
                "correct" if a["answer"] == a["x_is"] else "incorrect",
                _page_time(r),
                r.comment,
            ]
        ]

    return _paradigm_export(experiment, ("abx",), PAIRED_COMPARISON_COLUMNS, cells)


def bs1116_csv(experiment: Experiment) -> str:
    """BS.1116 trials in webMUSHRA's ``bs1116.csv`` layout: the hidden reference's and the
    condition's grades."""

    def cells(r: Any, conditions: dict[int, Any]) -> list[list[Any]]:
        a = r.answer
        return [
            [
                r.trial.excerpt.name,
                stimulus_name(conditions[int(a["reference"])]),
                stimulus_name(conditions[int(a["condition"])]),
                a["grade_reference"],
                a["grade_condition"],
                _page_time(r),
                r.comment,
            ]
        ]

    return _paradigm_export(experiment, ("bs1116",), BS1116_COLUMNS, cells)


def lss_csv(experiment: Experiment) -> str:
    """ACR and DCR votes in webMUSHRA's ``lss.csv`` layout (one Likert answer per page). The
    trial id is the excerpt, prefixed with the paradigm (``acr-``, ``dcr-``) when both are used."""
    both = {b["paradigm"] for b in paradigms.blocks(experiment.config)} >= {"acr", "dcr"}

    def cells(r: Any, conditions: dict[int, Any]) -> list[list[Any]]:
        trial_id = f"{r.trial.paradigm}-{r.trial.excerpt.name}" if both else r.trial.excerpt.name
        a = r.answer
        return [[trial_id, a["score"], stimulus_name(conditions[int(a["condition"])]), _page_time(r)]]

    return _paradigm_export(experiment, ("acr", "dcr"), LIKERT_COLUMNS, cells)


def lms_csv(experiment: Experiment) -> str:
    """ACR votes in webMUSHRA's ``lms.csv`` layout: each participant's votes on one excerpt as
    one multi-stimulus page (rows grouped per participant and excerpt, in the excerpts' order);
    ``stimuli_rating`` padded with a space each side, as write.php writes it."""

    def cells(r: Any, conditions: dict[int, Any]) -> list[list[Any]]:
        a = r.answer
        name = stimulus_name(conditions[int(a["condition"])])
        return [[r.trial.excerpt.name, f" {a['score']} ", name, _page_time(r)]]

    def page(r: Any) -> tuple[int, int, int]:
        return (r.participant_id, r.trial.excerpt.position, r.trial.excerpt_id)

    return _paradigm_export(experiment, ("acr",), LIKERT_COLUMNS, cells, page)


#: webMUSHRA result file -> its writer, in write.php's order.
WEBMUSHRA_FILES: dict[str, Callable[[Experiment], str]] = {
    "mushra.csv": mushra_csv,
    "paired_comparison.csv": paired_comparison_csv,
    "bs1116.csv": bs1116_csv,
    "lms.csv": lms_csv,
    "lss.csv": lss_csv,
}


#: The webMUSHRA file each paradigm's answers go into (AB / ABN and ranking have none).
WEBMUSHRA_FILES_OF: dict[str, tuple[str, ...]] = {
    "abx": ("paired_comparison.csv",),
    "bs1116": ("bs1116.csv",),
    "acr": ("lss.csv", "lms.csv"),
    "dcr": ("lss.csv",),
}


def webmushra_files_for(experiment: Experiment) -> list[str]:
    """The webMUSHRA files besides mushra.csv that the experiment's blocks write into."""
    used = {b["paradigm"] for b in paradigms.blocks(experiment.config)}
    return [n for n in WEBMUSHRA_FILES if any(n in WEBMUSHRA_FILES_OF.get(p, ()) for p in used)]


def webmushra_csvs(experiment: Experiment) -> dict[str, str]:
    """Every webMUSHRA result file the experiment has rows for (webMUSHRA writes a file only
    when a page of its type was answered): name -> CSV text."""
    out = {}
    for name, write in WEBMUSHRA_FILES.items():
        text = write(experiment)
        if text.count("\n") > 1:
            out[name] = text
    return out
