"""The answers of paradigm blocks other than MUSHRA (``webmushra.paradigms``) as the long tables
the analyses of ``evaluation.paradigms`` read (columns in docs/statistics.md, "Other paradigms").

One row per answered test trial (training, catch and repeated trials left out) of the sessions
that are not pilots; the analysis tables leave out the participants the researcher excluded, as
the MUSHRA analysis does. Participants are ``P<id>``, items the excerpt's name and conditions
their label, as in the ratings table. Reads only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db.models import QuerySet

from .models import Experiment, Participant, TrialResponse
from .paradigms import MUSHRA
from .selectors import check_responses

if TYPE_CHECKING:
    import pandas as pd

    from evaluation.paradigms.common import ParadigmResult

#: Block paradigm -> the analysis that reads its table (``evaluation.paradigms.PARADIGMS``).
ANALYSIS: dict[str, str] = {
    "abx": "abx",
    "ab": "preference",
    "abn": "preference",
    "bs1116": "bs1116",
    "acr": "acr",
    "dcr": "dcr",
    "ranking": "ranking",
}
#: Analysis -> the columns of its long table, in order.
COLUMNS: dict[str, list[str]] = {
    "abx": ["participant", "item", "condition_a", "condition_b", "x_is", "answer"],
    "preference": ["participant", "item", "condition_a", "condition_b", "choice"],
    "bs1116": ["participant", "item", "condition", "reference_is", "grade_b", "grade_c"],
    "acr": ["participant", "item", "condition", "rating", "passed_checks"],
    "dcr": ["participant", "item", "condition", "rating", "passed_checks"],
    "ranking": ["participant", "item", "condition", "rank"],
}


def answered(
    experiment: Experiment,
    paradigms: Iterable[str] | None = None,
    *,
    drop_excluded: bool = True,
    completed_only: bool = False,
) -> QuerySet[TrialResponse]:
    """The answered test trials of paradigm blocks (not MUSHRA): no pilots, no training, catch or
    repeated trials; ``drop_excluded``: without the participants the researcher excluded;
    ``completed_only``: complete sessions only. In the order the participants answered."""
    qs = (
        TrialResponse.objects.filter(
            trial__experiment=experiment,
            participant__is_pilot=False,
            trial__is_training=False,
            trial__is_catch=False,
            trial__repeat_of__isnull=True,
        )
        .exclude(trial__paradigm=MUSHRA)
        .exclude(answer={})
    )
    if paradigms is not None:
        qs = qs.filter(trial__paradigm__in=list(paradigms))
    if drop_excluded:
        qs = qs.filter(participant__excluded_at__isnull=True)
    if completed_only:
        qs = qs.filter(participant__stage=Participant.Stage.COMPLETED)
    return qs.select_related("participant", "trial__excerpt").order_by("participant_id", "submitted_at", "pk")


def answer_rows(response: TrialResponse, labels: dict[int, str]) -> list[dict[str, Any]]:
    """One stored answer (``paradigms.clean_answer``'s form) as rows of its analysis's table."""
    a = response.answer or {}
    paradigm = response.trial.paradigm
    base = {"participant": f"P{response.participant_id}", "item": response.trial.excerpt.name}
    if paradigm == "abx":
        return [
            base
            | {
                "condition_a": labels[int(a["a"])],
                "condition_b": labels[int(a["b"])],
                "x_is": a["x_is"],
                "answer": a["answer"],
            }
        ]
    if paradigm in ("ab", "abn"):
        return [base | {"condition_a": labels[int(a["a"])], "condition_b": labels[int(a["b"])], "choice": a["choice"]}]
    if paradigm == "bs1116":
        reference_b = a["hidden_reference_is"] == "B"
        return [
            base
            | {
                "condition": labels[int(a["condition"])],
                "reference_is": a["hidden_reference_is"],
                "grade_b": a["grade_reference"] if reference_b else a["grade_condition"],
                "grade_c": a["grade_condition"] if reference_b else a["grade_reference"],
            }
        ]
    if paradigm in ("acr", "dcr"):
        return [base | {"condition": labels[int(a["condition"])], "rating": int(a["score"])}]
    if paradigm == "ranking":
        ranks = a.get("ranks") or {}
        return [base | {"condition": labels[int(cid)], "rank": int(rank)} for cid, rank in ranks.items()]
    return []


def table_keys(experiment: Experiment) -> dict[int, str]:
    """Block index -> the name of its table in the report: the block's paradigm (``abx``,
    ``ab``, ``bs1116``...), with ``_block<n>`` added when two blocks share a paradigm."""
    from .paradigms import blocks

    listed = blocks(experiment.config)
    counts: dict[str, int] = defaultdict(int)
    for b in listed:
        counts[b["paradigm"]] += 1
    return {
        n: (b["paradigm"] if counts[b["paradigm"]] == 1 else f"{b['paradigm']}_block{n + 1}")
        for n, b in enumerate(listed)
        if b["paradigm"] != MUSHRA
    }


def gold_passed(experiment: Experiment) -> dict[tuple[int, int], bool]:
    """(participant id, block) -> whether every gold question (ITU-T P.808) the
    participant answered in that block passed; absent: none answered."""
    out: dict[tuple[int, int], bool] = {}
    rows = check_responses(experiment, include_pilot=True).values_list("participant_id", "trial__block", "catch")
    for participant, block, outcome in rows:
        passed = (outcome or {}).get("passed") is not False
        out[(participant, block)] = out.get((participant, block), True) and passed
    return out


def paradigm_rows(experiment: Experiment, *, drop_excluded: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Table name (:func:`table_keys`) -> the rows of its analysis's long table, for every
    paradigm block with at least one answer (ACR / DCR rows with ``passed_checks``: the
    participant's gold questions of the block, :func:`gold_passed`)."""
    labels = dict(experiment.conditions.values_list("pk", "label"))
    keys = table_keys(experiment)
    gold = gold_passed(experiment)
    out: dict[str, list[dict[str, Any]]] = {}
    for response in answered(experiment, drop_excluded=drop_excluded):
        key = keys.get(response.trial.block, response.trial.paradigm)
        rows = answer_rows(response, labels)
        if response.trial.paradigm in ("acr", "dcr"):
            passed = gold.get((response.participant_id, response.trial.block), True)
            rows = [row | {"passed_checks": passed} for row in rows]
        out.setdefault(key, []).extend(rows)
    return {k: v for k, v in out.items() if v}


def analysis_name(key: str) -> str:
    """The analysis behind a table name of :func:`table_keys` (``ab_block2`` -> ``preference``)."""
    return ANALYSIS[key.split("_block")[0]]


def paradigm_frames(experiment: Experiment) -> dict[str, pd.DataFrame]:
    """Table name -> the long table the analysis reads (excluded participants left out)."""
    import pandas as pd

    return {
        key: pd.DataFrame(rows, columns=COLUMNS[analysis_name(key)]) for key, rows in paradigm_rows(experiment).items()
    }


def paradigm_results(
    experiment: Experiment, settings: dict[str, Any] | None = None
) -> tuple[dict[str, ParadigmResult], list[dict[str, str]]]:
    """Each paradigm block's analysis (``evaluation.paradigms.analyse``) at the experiment's
    alpha and confidence level, and a warning for each table the analysis refused."""
    from evaluation.errors import EvaluationError
    from evaluation.paradigms import analyse
    from evaluation.settings import Settings

    from .paradigms import blocks, points

    s = Settings.from_dict(settings or {})
    listed = blocks(experiment.config)
    block_of = {key: listed[n] for n, key in table_keys(experiment).items()}
    results: dict[str, ParadigmResult] = {}
    warnings: list[dict[str, str]] = []
    for key, frame in paradigm_frames(experiment).items():
        name = analysis_name(key)
        # An ACR block's own category scale (a webMUSHRA likert page's 2 or 4 points, say).
        options = {"points": points(block_of[key])} if name in ("acr", "dcr") and key in block_of else {}
        try:
            results[key] = analyse(name, frame, alpha=s.alpha, confidence_level=s.confidence_level, **options)
        except (EvaluationError, ArithmeticError, ValueError) as exc:  # numpy's LinAlgError is a ValueError
            # One block's data the analysis cannot fit must not cost the rest of the report.
            warnings.append(
                {
                    "code": "paradigm_not_analysed",
                    "message": f"The {key} block was not analysed: {exc or type(exc).__name__}",
                }
            )
    return results, warnings
