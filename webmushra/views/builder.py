"""Experiment builder: create, upload excerpts and checkpoints, define conditions, settings."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from evaluation.errors import EvaluationError

from .. import errors, forms, interop, paradigms
from ..access import experiment_for, part_of
from ..rules import MAX_SIGNALS_PER_TRIAL
from ..services import accounts, block_settings, blocks, cabinet, experiments, uploads


def _form_errors(request: HttpRequest, form) -> None:
    for field, field_errors in form.errors.items():
        label = form.fields[field].label or field if field in form.fields else ""
        for e in field_errors:
            messages.error(request, f"{label}: {e}" if label and field != "__all__" else e)


def _back(pk: int, anchor: str = ""):
    """Back to the experiment page at the section whose form was sent; that section shows the
    messages (errors next to the form that caused them, and focused)."""
    response = redirect("researcher:experiment", pk=pk)
    if anchor:
        response["Location"] += f"?section={anchor}#{anchor}"
    return response


@login_required
def experiment_new(request: HttpRequest) -> HttpResponse:
    form = forms.ExperimentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            experiment = experiments.create_experiment(
                owner=request.user, title=d["title"], description=d["description"], sample_rate=d["sample_rate"]
            )
            if not (d["anchor35"] and d["anchor70"]):
                experiments.set_anchors(experiment=experiment, anchor35=d["anchor35"], anchor70=d["anchor70"])
        except errors.ServiceError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Created “{experiment.title}”. Next: upload excerpts and checkpoints.")
            return redirect("researcher:experiment", pk=experiment.pk)
    return render(request, "webmushra/researcher/experiment_new.html", {"form": form})


@login_required
@require_POST
def upload_excerpts(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    form = forms.ExcerptUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        _form_errors(request, form)
        return _back(pk, "excerpts")
    added = 0
    for name, dry, ref in form.pairs():
        # Each pair is stored on its own: a bad pair is reported and leaves nothing behind.
        try:
            excerpt = uploads.add_excerpt(
                experiment=experiment,
                name=name,
                dry=dry,
                reference=ref,
                is_training=form.cleaned_data.get("is_training", False),
            )
        except errors.ServiceError as exc:
            messages.error(request, f"Excerpt {name!r} not added — {exc}")
            continue
        added += 1
        for w in excerpt.warnings:
            messages.warning(request, f"{excerpt.name}: {w}")
    if added:
        messages.success(request, f"Added {added} excerpt(s).")
    return _back(pk, "excerpts")


@login_required
@require_POST
def delete_excerpt(request: HttpRequest, pk: int, excerpt_id: int) -> HttpResponse:
    experiment, excerpt = part_of(request.user, pk, "excerpts", excerpt_id)
    try:
        experiments.remove_excerpt(excerpt=excerpt)
        messages.success(request, f"Removed excerpt {excerpt.name!r}.")
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    return _back(pk, "excerpts")


@login_required
@require_POST
def excerpt_training(request: HttpRequest, pk: int, excerpt_id: int) -> HttpResponse:
    """Mark an excerpt for training only (it leaves the test), or put it back in the test."""
    experiment, excerpt = part_of(request.user, pk, "excerpts", excerpt_id)
    training = request.POST.get("training") == "on"
    try:
        experiments.set_excerpt_training(excerpt=excerpt, training=training)
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"{excerpt.name!r} is now {'heard in training only' if training else 'a test excerpt'}.",
        )
    return _back(pk, "excerpts")


@login_required
@require_POST
def condition_display_name(request: HttpRequest, pk: int, condition_id: int) -> HttpResponse:
    """Set the name a condition has in training trials (participants see it there)."""
    experiment, condition = part_of(request.user, pk, "conditions", condition_id)
    try:
        experiments.set_display_name(condition=condition, display_name=request.POST.get("display_name", ""))
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Training name of {condition.label!r} saved.")
    return _back(pk, "conditions")


@login_required
@require_POST
def condition_ir(request: HttpRequest, pk: int, condition_id: int) -> HttpResponse:
    """Attach or replace a model condition's cabinet impulse response."""
    experiment, condition = part_of(request.user, pk, "conditions", condition_id)
    form = forms.ConditionIRForm(request.POST, request.FILES)
    if not form.is_valid():
        _form_errors(request, form)
        return _back(pk, "conditions")
    try:
        condition = cabinet.set_condition_ir(condition=condition, file=form.cleaned_data["ir"])
    except errors.ServiceError as exc:
        messages.error(request, f"Impulse response refused — {exc}")
    else:
        info = condition.ir_info
        messages.success(
            request,
            f"{condition.label!r} is heard through {info['name']} ({info['sample_rate']} Hz, "
            f"{info['seconds'] * 1000:.0f} ms); render what changed to hear it.",
        )
    return _back(pk, "conditions")


@login_required
@require_POST
def condition_ir_delete(request: HttpRequest, pk: int, condition_id: int) -> HttpResponse:
    experiment, condition = part_of(request.user, pk, "conditions", condition_id)
    try:
        cabinet.remove_condition_ir(condition=condition)
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Removed the impulse response of {condition.label!r}.")
    return _back(pk, "conditions")


@login_required
@require_POST
def upload_checkpoint(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    form = forms.CheckpointUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        _form_errors(request, form)
        return _back(pk, "checkpoints")
    d = form.cleaned_data
    try:
        ckpt = uploads.add_checkpoint(
            experiment=experiment,
            name=d["name"],
            file=d["file"],
            config=d.get("config"),
            sample_rate=d.get("sample_rate"),
            slimmable_size=d.get("slimmable_size"),
        )
    except errors.ServiceError as exc:
        messages.error(request, f"Checkpoint refused — {exc}")
    else:
        messages.success(
            request,
            f"Recognised {ckpt.file.name.rsplit('/', 1)[-1]}: {ckpt.architecture} "
            f"({ckpt.format}, {ckpt.sample_rate} Hz"
            f"{', knobs ' + ', '.join(ckpt.knob_names) if ckpt.knob_names else ''}).",
        )
    return _back(pk, "checkpoints")


@login_required
@require_POST
def delete_checkpoint(request: HttpRequest, pk: int, checkpoint_id: int) -> HttpResponse:
    experiment, ckpt = part_of(request.user, pk, "checkpoints", checkpoint_id)
    try:
        experiments.remove_checkpoint(checkpoint=ckpt)
        messages.success(request, f"Removed checkpoint {ckpt.name!r}.")
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    return _back(pk, "checkpoints")


@login_required
@require_POST
def add_condition(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    form = forms.ConditionForm(request.POST, experiment=experiment)
    if not form.is_valid():
        _form_errors(request, form)
        return _back(pk, "conditions")
    d = form.cleaned_data
    try:
        experiments.add_model_condition(
            experiment=experiment,
            checkpoint=d["checkpoint"],
            label=d["label"],
            knobs=d["knobs"],
            display_name=d.get("display_name", ""),
        )
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Added condition {d['label']!r}.")
    return _back(pk, "conditions")


@login_required
@require_POST
def delete_condition(request: HttpRequest, pk: int, condition_id: int) -> HttpResponse:
    experiment, condition = part_of(request.user, pk, "conditions", condition_id)
    try:
        experiments.remove_condition(condition=condition)
        messages.success(request, f"Removed condition {condition.label!r}.")
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    return _back(pk, "conditions")


@login_required
@require_POST
def set_anchors(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    form = forms.AnchorsForm(request.POST)
    form.is_valid()
    try:
        experiments.set_anchors(
            experiment=experiment,
            anchor35=form.cleaned_data.get("anchor35", False),
            anchor70=form.cleaned_data.get("anchor70", False),
        )
        messages.success(request, "Anchors updated.")
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    return _back(pk, "conditions")


@login_required
@require_POST
def split_blocks(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    block = blocks.split_into_blocks(experiment=experiment)
    messages.success(
        request,
        f"Started {block.title}: add its model conditions here "
        f"(each block holds at most {MAX_SIGNALS_PER_TRIAL} signals per trial).",
    )
    return redirect("researcher:experiment", pk=block.pk)


@login_required
def experiment_settings(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request.user, pk)
    if request.method == "POST":
        form = forms.SettingsForm(request.POST)
        if form.is_valid():
            try:
                experiments.update_experiment_settings(experiment=experiment, **form.service_arguments())
            except errors.ServiceError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, "Settings saved.")
                return redirect("researcher:experiment", pk=pk)
        else:
            _form_errors(request, form)
    else:
        form = forms.SettingsForm.for_experiment(experiment)
    return render(
        request,
        "webmushra/researcher/settings.html",
        {
            "experiment": experiment,
            "form": form,
            "collaborators": experiment.shared_with.order_by("username"),
            **_blocks_context(request, experiment),
        },
    )


def _blocks_context(
    request: HttpRequest, experiment, formset: forms.BaseBlockFormSet | None = None, error: str = ""
) -> dict:
    """The settings page's blocks section: the rows (``formset``: as sent, with its errors), and
    what each block of the stored config gives every participant (``block_settings.block_plan``)
    with the ABX plan asked for (``abx_proportion``, ``abx_power`` in the query)."""
    abx_error = ""
    try:
        proportion, power = block_settings.parse_abx_inputs(
            request.GET.get("abx_proportion"), request.GET.get("abx_power")
        )
    except EvaluationError as exc:
        abx_error = str(exc)
        proportion, power = block_settings.ABX_PROPORTION, block_settings.ABX_POWER
    return {
        "blocks_formset": formset if formset is not None else forms.block_formset(experiment),
        "blocks_error": error,
        "blocks_refused": formset is not None,
        "blocks_plan": block_settings.block_plan(experiment, abx_proportion=proportion, abx_power=power),
        "abx_inputs": {"proportion": proportion, "power": power, "alpha": block_settings.ABX_ALPHA},
        "abx_error": abx_error,
    }


@login_required
@require_POST
def experiment_blocks(request: HttpRequest, pk: int) -> HttpResponse:
    """Save the blocks section of the settings page: the rows in their order, checked by
    ``rules.validate_config``. A refused change is shown next to the row and setting it names
    (400), or above the rows when the experiment can no longer change (409); nothing is stored."""
    experiment = experiment_for(request.user, pk)
    formset = forms.block_formset(experiment, request.POST)
    status, error = 400, ""
    if not experiment.is_editable:
        status, error = 409, block_settings.locked_message(experiment)
    elif formset.is_valid() and formset.stale_trapping(paradigms.blocks(experiment.config)):
        status, error = 409, formset.stale_trapping(paradigms.blocks(experiment.config))
    elif formset.is_valid():
        rows = formset.ordered()
        try:
            block_settings.set_blocks(experiment=experiment, blocks=[block for _, block in rows])
        except errors.ConflictError as exc:
            status, error = 409, str(exc)
        except errors.FieldError as exc:
            formset.show_error(exc.field, str(exc), [index for index, _ in rows])
        except errors.ServiceError as exc:
            error = str(exc)
        else:
            messages.success(request, f"Blocks saved: {len(rows)} block{'s' if len(rows) != 1 else ''}.")
            response = redirect("researcher:settings", pk=pk)
            response["Location"] += "#blocks"
            return response
    experiment.refresh_from_db()
    form = forms.SettingsForm.for_experiment(experiment)
    context = {
        "experiment": experiment,
        "form": form,
        "collaborators": experiment.shared_with.order_by("username"),
        **_blocks_context(request, experiment, formset, error),
    }
    return render(request, "webmushra/researcher/settings.html", context, status=status)


@login_required
@require_POST
def block_trapping(request: HttpRequest, pk: int) -> HttpResponse:
    """Add a trapping question to an ACR / DCR block (``message`` file, ``answer``, ``block``), or
    remove one (``remove``: "block:number"). A refusal is shown above the blocks (400 / 409)."""
    experiment = experiment_for(request.user, pk)
    try:
        if request.POST.get("remove"):
            block, _sep, number = request.POST["remove"].partition(":")
            if not (block.isascii() and block.isdecimal() and number.isascii() and number.isdecimal()):
                raise errors.FieldError("remove", "expected block:number")
            block_settings.remove_trapping(experiment=experiment, block=int(block), number=int(number))
            messages.success(request, f"Trapping question {number} of block {block} removed.")
        else:
            upload = request.FILES.get("message")
            if upload is None:
                raise errors.FieldError("message", "choose the audio file of the message")
            raw = request.POST.get("block", "")
            block_settings.add_trapping(
                experiment=experiment,
                block=int(raw) if raw.isascii() and raw.isdecimal() else -1,
                upload=upload,
                answer=request.POST.get("answer", ""),
            )
            messages.success(request, "Trapping question added.")
    except errors.ServiceError as exc:
        status = 409 if isinstance(exc, errors.ConflictError) else 400
        experiment.refresh_from_db()
        context = {
            "experiment": experiment,
            "form": forms.SettingsForm.for_experiment(experiment),
            "collaborators": experiment.shared_with.order_by("username"),
            **_blocks_context(request, experiment),
            "trapping_error": str(exc),
        }
        return render(request, "webmushra/researcher/settings.html", context, status=status)
    response = redirect("researcher:settings", pk=pk)
    response["Location"] += "#trapping"
    return response


@login_required
@require_POST
def share(request: HttpRequest, pk: int) -> HttpResponse:
    """Share the experiment with another researcher (``with``: a username or e-mail), or take a
    collaborator's access away (``remove``: their user id)."""
    experiment = experiment_for(request.user, pk)
    try:
        if request.POST.get("remove"):
            try:
                user_id = int(request.POST["remove"])
            except ValueError:
                raise errors.ServiceError("remove: not a user id") from None
            accounts.unshare_experiment(experiment=experiment, by=request.user, user_id=user_id)
            messages.success(request, "Collaborator removed.")
            if user_id == request.user.pk:
                return redirect("researcher:experiments")
        else:
            accounts.share_experiment(experiment=experiment, by=request.user, with_user=request.POST.get("with", ""))
            messages.success(request, "Shared: they now have the same access to this experiment as you.")
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
    return redirect("researcher:settings", pk=pk)


@login_required
def import_webmushra(request: HttpRequest) -> HttpResponse:
    form = forms.WebMushraImportForm(request.POST or None, request.FILES or None)
    report = None
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            result = interop.import_uploads(
                owner=request.user, config=d["config"], audio=d["audio"], allow_partial=d["allow_partial"]
            )
        except interop.ImportRefused as exc:
            report = exc.report
            messages.error(request, str(exc))
        except errors.ServiceError as exc:
            messages.error(request, str(exc))
        else:
            for line in result.report.lines():
                messages.warning(request, line)
            messages.success(request, f"Imported {len(result.experiments)} experiment(s) from {d['config'].name}.")
            return redirect("researcher:experiment", pk=result.experiments[0].pk)
    elif request.method == "POST":
        _form_errors(request, form)
    return render(request, "webmushra/researcher/import.html", {"form": form, "report": report})
