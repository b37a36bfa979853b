"""Who may see what: the one check the researcher pages and the API share.

An experiment the caller may not see answers 404, never 403, so its existence is not
revealed. ``Http404`` serves both: Django renders it for the pages and REST framework
turns it into its own 404 for the API.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404

from . import selectors
from .models import Experiment, Report


def experiment_for(user: Any, pk: int) -> Experiment:
    """The experiment if this user may see it; 404 otherwise (never reveals existence)."""
    try:
        return selectors.experiments_for(user).get(pk=pk)
    except Experiment.DoesNotExist:
        raise Http404("no such experiment") from None


def part_of(user: Any, pk: int, related: str, child_id: int) -> tuple[Experiment, Any]:
    """The experiment (as ``experiment_for``) and its row ``child_id`` of ``related`` (``excerpts``,
    ``conditions``, ``checkpoints``, ``participants``); 404 when it has none of that id."""
    experiment = experiment_for(user, pk)
    child = getattr(experiment, related).filter(pk=child_id).first()
    if child is None:
        raise Http404(f"no such {related.removesuffix('s')}")
    return experiment, child


def report_for(experiment: Experiment, report_id: int) -> Report:
    """One of the experiment's reports; 404 when it has none of that id."""
    report = experiment.reports.filter(pk=report_id).first()
    if report is None:
        raise Http404("no such report")
    return report
