"""Researcher forms: they check the shape of the input; the services check its meaning."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

from django import forms
from django.core.files.uploadedfile import UploadedFile

from evaluation.settings import Settings as AnalysisSettings

from .models import Checkpoint, ConditionKind, Experiment
from .paradigms import MAX_REPETITIONS, PARADIGMS, WITH_GOLD
from .paradigms import blocks as paradigm_blocks
from .rules import (
    EXIT_CODE_MAX,
    HEADPHONE_DEFAULTS,
    MAX_CATCH_TRIALS,
    MAX_REPEAT_TRIALS,
    MAX_TRIAL_INSTRUCTIONS_CHARS,
    RULE_DEFAULTS,
    RULE_MAXIMA,
    TRANSLATABLE_TEXTS,
    flow,
    headphone_settings,
    player_rules,
    questionnaire_fields,
    trial_comments,
)

#: The analysis's own post-screening defaults (BS.1534-3 §4.1.2), shown on the settings page.
SCREENING_DEFAULTS = AnalysisSettings()

SAMPLE_RATES = [(44100, "44.1 kHz"), (48000, "48 kHz"), (88200, "88.2 kHz"), (96000, "96 kHz")]


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that accepts several files at once (a list of uploads)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None) -> list[UploadedFile]:
        single = super().clean
        if isinstance(data, (list, tuple)):
            files = [single(d, initial) for d in data if d]
            if self.required and not files:
                raise forms.ValidationError(self.error_messages["required"], code="required")
            return files
        return [single(data, initial)] if data else []


class ExperimentForm(forms.Form):
    title = forms.CharField(max_length=200)
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, help_text="Shown to participants on the landing page."
    )
    sample_rate = forms.TypedChoiceField(
        choices=SAMPLE_RATES, coerce=int, initial=48000, help_text="Rate of the stimuli participants hear."
    )
    anchor35 = forms.BooleanField(required=False, initial=True, label=ConditionKind.ANCHOR_35.label)
    anchor70 = forms.BooleanField(required=False, initial=True, label=ConditionKind.ANCHOR_70.label)


class ExcerptUploadForm(forms.Form):
    dry = MultipleFileField(
        label="Dry inputs (WAV or FLAC)", help_text="One or more files; paired with the recordings in name order."
    )
    reference = MultipleFileField(
        label="Device recordings (WAV or FLAC)", help_text="The real device's output for each dry input."
    )
    is_training = forms.BooleanField(
        required=False,
        label="Training only",
        help_text="Heard in training trials only and left out of the test (training never reuses a test excerpt).",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        dry, ref = data.get("dry") or [], data.get("reference") or []
        if dry and ref and len(dry) != len(ref):
            raise forms.ValidationError(
                f"{len(dry)} dry file(s) but {len(ref)} recording(s): every dry input needs its recording"
            )
        return data

    def pairs(self) -> list[tuple[str, UploadedFile, UploadedFile]]:
        """(name, dry, reference) triples, paired in file-name order."""
        dry = sorted(self.cleaned_data["dry"], key=lambda f: f.name)
        ref = sorted(self.cleaned_data["reference"], key=lambda f: f.name)
        return [(excerpt_name(d.name), d, r) for d, r in zip(dry, ref)]


_ROLE_SUFFIX = re.compile(r"[_\-. ]*(dry|di|input|in|clean)$", re.IGNORECASE)


def excerpt_name(filename: str) -> str:
    """An excerpt's name from its dry file name, without a trailing role word ("riff_dry" -> "riff")."""
    stem = Path(filename).stem
    return _ROLE_SUFFIX.sub("", stem) or stem


class CheckpointUploadForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Empty: the file name.")
    file = forms.FileField(
        label="Checkpoint file",
        help_text="NAM (.nam), CoreAudioML / GuitarML JSON, PyTorch Lightning (.ckpt) or a native checkpoint.",
    )
    config = forms.FileField(
        required=False,
        label="Config file (optional)",
        help_text="For formats whose hyper-parameters live in a separate file.",
    )
    sample_rate = forms.IntegerField(
        required=False, min_value=8000, max_value=384000, help_text="Only when the file does not say."
    )
    slimmable_size = forms.FloatField(
        required=False,
        min_value=0.0,
        max_value=1.0,
        label="Slimmable size (NAM, optional)",
        help_text="0 to 1: the size a slimmable NAM model runs at. Empty: the size NeuralAmpModelerCore renders by "
        "default (the full model); the checkpoint's details say which.",
    )


def parse_knobs(text: str) -> dict[str, float]:
    """Knob settings from ``gain=0.5, tone=0.3`` (or a JSON object)."""
    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"knobs: not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("knobs: expected an object of knob -> value")
        items: list[tuple[Any, Any]] = list(value.items())
    else:
        items = []
        for part in re.split(r"[,;\n]+", text):
            if not part.strip():
                continue
            if "=" not in part:
                raise forms.ValidationError(f"knobs: {part.strip()!r} is not name=value")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    knobs: dict[str, float] = {}
    for k, v in items:
        try:
            knobs[str(k)] = float(v)
        except (TypeError, ValueError):
            raise forms.ValidationError(f"knobs: the value of {k} ({v!r}) is not a number") from None
    return knobs


class ConditionForm(forms.Form):
    checkpoint = forms.ModelChoiceField(queryset=Checkpoint.objects.none())
    label = forms.CharField(max_length=120, help_text="Used in the analysis only; participants never see it.")
    knobs = forms.CharField(required=False, help_text="For example gain=0.5, tone=0.3 (empty: no knobs).")
    display_name = forms.CharField(
        required=False,
        max_length=60,
        label="Name in training",
        help_text="What participants see in training trials (empty: “System 1”, “System 2”, …).",
    )

    def __init__(self, *args, experiment: Experiment, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        checkpoint = self.fields["checkpoint"]
        assert isinstance(checkpoint, forms.ModelChoiceField)
        checkpoint.queryset = experiment.checkpoints.all()

    def clean_knobs(self) -> dict[str, float]:
        return parse_knobs(self.cleaned_data.get("knobs", ""))


class ConditionIRForm(forms.Form):
    ir = forms.FileField(
        label="Cabinet impulse response",
        help_text="Mono WAV or FLAC, at most 10 s; applied after the model at the model's rate.",
    )


class AnchorsForm(forms.Form):
    anchor35 = forms.BooleanField(required=False, label=ConditionKind.ANCHOR_35.label)
    anchor70 = forms.BooleanField(required=False, label=ConditionKind.ANCHOR_70.label)


QUESTIONNAIRE_HELP = (
    'A JSON list, for example [{"name": "age", "label": "Age", "type": "number", "required": true}, '
    '{"name": "gear", "label": "Do you play guitar?", "type": "select", "options": ["yes", "no"]}]. '
    "Types: text, number, textarea, select."
)


class SettingsForm(forms.Form):
    """Texts and settings; the config-backed fields map onto the keys the participant pages read."""

    title = forms.CharField(max_length=200)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), required=False)
    consent_text = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), required=False, label="Consent text")
    estimated_minutes = forms.IntegerField(min_value=1, max_value=600, label="Estimated duration (minutes)")
    loudness_target_lufs = forms.FloatField(
        required=False,
        min_value=-70,
        max_value=0,
        label="Loudness target (LUFS)",
        help_text="Empty: align every condition to its reference.",
    )
    trial_subset_size = forms.IntegerField(
        required=False,
        min_value=0,
        label="Trials per participant",
        help_text="Empty or 0: every excerpt; otherwise a balanced subset.",
    )
    catch_trials = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_CATCH_TRIALS,
        label="Catch trials per participant",
        help_text="A test excerpt again with one model replaced by the reference, placed at random; "
        "a duplicate rated below the catch threshold (90 unless set) is flagged. Kept out of the analysis. 0: none.",
    )
    repeat_trials = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_REPEAT_TRIALS,
        label="Repeated trials per participant",
        help_text="Test trials presented again later (never directly after), for each listener's test–retest "
        "consistency; the repeat's scores feed the reliability section only. 0: none.",
    )
    trial_comments = forms.ChoiceField(
        choices=[("off", "Off"), ("optional", "Optional"), ("required", "Required")],
        required=False,
        initial="off",
        label="Comment box on each test trial",
        help_text="Free text, at most 2000 characters; exported as comments.csv.",
    )
    trial_instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        max_length=MAX_TRIAL_INSTRUCTIONS_CHARS,
        label="Instructions on every trial page of this block",
        help_text="Shown above the sliders of each trial; in a blocked design each block has its own.",
    )
    completion_url = forms.URLField(
        required=False,
        label="Prolific completion URL",
        assume_scheme="https",
        help_text="Participants are sent here when they finish.",
    )
    completion_code = forms.CharField(
        required=False, max_length=EXIT_CODE_MAX, label="Completion code", help_text="Sent with the completion URL."
    )
    screenout_url = forms.URLField(
        required=False,
        label="Screen-out URL",
        assume_scheme="https",
        help_text="Participants who fail the headphone check are sent here. Empty: the completion URL.",
    )
    screenout_code = forms.CharField(
        required=False,
        max_length=EXIT_CODE_MAX,
        label="Screen-out code",
        help_text="Prolific's code for screened-out participants.",
    )
    training = forms.BooleanField(required=False, label="Training trial before the test")
    level_setting = forms.BooleanField(required=False, label="Listening-level page")
    headphone_check = forms.BooleanField(required=False, label="Headphone screening")
    headphone_pass_threshold = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=HEADPHONE_DEFAULTS["pass_threshold"],
        label="Headphone check: share of correct answers to pass",
    )
    headphone_trials = forms.IntegerField(
        min_value=1,
        max_value=20,
        initial=HEADPHONE_DEFAULTS["trials_per_test"],
        label="Headphone check: trials per test",
    )
    must_play_all = forms.BooleanField(required=False, label="Every signal must be played before rating")
    require_one_100 = forms.BooleanField(required=False, label="At least one signal rated 100 (BS.1534-3 Attachment 1)")
    only_playing_slider_moves = forms.BooleanField(required=False, label="Only the playing signal's slider moves")
    min_play_seconds = forms.FloatField(
        required=False,
        min_value=0,
        max_value=RULE_MAXIMA["min_play_seconds"],
        initial=RULE_DEFAULTS["min_play_seconds"],
        label="Each signal heard at least (s; with every signal played; 0: any play)",
    )
    min_trial_seconds = forms.FloatField(
        required=False,
        min_value=0,
        max_value=RULE_MAXIMA["min_trial_seconds"],
        initial=RULE_DEFAULTS["min_trial_seconds"],
        label="At least this long on a trial page (s; 0: no minimum)",
    )
    reference_threshold = forms.FloatField(
        min_value=0,
        max_value=100,
        initial=SCREENING_DEFAULTS.reference_threshold,
        label="Post-screening: hidden reference rated below",
    )
    reference_max_fraction = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=SCREENING_DEFAULTS.reference_max_fraction,
        label="... on more than this share of items",
    )
    anchor_threshold = forms.FloatField(
        min_value=0,
        max_value=100,
        initial=SCREENING_DEFAULTS.anchor_threshold,
        label="Post-screening: 7 kHz anchor rated above",
    )
    anchor_max_fraction = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=SCREENING_DEFAULTS.anchor_max_fraction,
        label="... on more than this share of items",
    )
    questionnaire = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}), required=False, help_text=QUESTIONNAIRE_HELP
    )
    # The texts in German (config["translations"]["de"]; webmushra/i18n.py): optional, a text
    # left empty is shown in English.
    de_title = forms.CharField(max_length=200, required=False, label="Title (German)")
    de_description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, label="Description (German)"
    )
    de_instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5}), required=False, label="Instructions (German)"
    )
    de_trial_instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        max_length=MAX_TRIAL_INSTRUCTIONS_CHARS,
        label="Instructions on every trial page (German)",
    )
    de_consent_text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5}), required=False, label="Consent text (German)"
    )
    de_questionnaire = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        label="Questionnaire labels (German)",
        help_text='A JSON object from field name to label, for example {"age": "Alter"}.',
    )

    @classmethod
    def for_experiment(cls, experiment: Experiment) -> SettingsForm:
        cfg = experiment.config
        hc = headphone_settings(experiment)
        rules = player_rules(experiment)
        analysis = cfg.get("analysis") or {}
        german = (cfg.get("translations") or {}).get("de") or {}
        german_labels = german.get("questionnaire") or {}
        initial = {
            "title": experiment.title,
            "description": experiment.description,
            "instructions": experiment.instructions,
            "consent_text": experiment.consent_text,
            "estimated_minutes": experiment.estimated_minutes,
            "loudness_target_lufs": experiment.loudness_target_lufs,
            "trial_subset_size": cfg.get("trial_subset_size") or None,
            "catch_trials": cfg.get("catch_trials") or None,
            "repeat_trials": cfg.get("repeat_trials") or None,
            "trial_comments": trial_comments(cfg),
            "trial_instructions": cfg.get("trial_instructions") or "",
            "completion_url": cfg.get("completion_url", ""),
            "completion_code": cfg.get("completion_code", ""),
            "screenout_url": cfg.get("screenout_url", ""),
            "screenout_code": cfg.get("screenout_code", ""),
            "training": flow(experiment, "training"),
            "level_setting": flow(experiment, "level_setting"),
            "headphone_check": hc["enabled"],
            "headphone_pass_threshold": hc["pass_threshold"],
            "headphone_trials": hc["trials_per_test"],
            "must_play_all": rules["must_play_all"],
            "require_one_100": rules["require_one_100"],
            "only_playing_slider_moves": rules["only_playing_slider_moves"],
            "min_play_seconds": rules["min_play_seconds"],
            "min_trial_seconds": rules["min_trial_seconds"],
            **{
                name: analysis.get(name, getattr(SCREENING_DEFAULTS, name))
                for name in ("reference_threshold", "reference_max_fraction", "anchor_threshold", "anchor_max_fraction")
            },
            # The questionnaire participants get (the default one when none was set): saving the
            # page unchanged keeps it; an empty box means no questionnaire.
            "questionnaire": json.dumps(questions, indent=1) if (questions := questionnaire_fields(experiment)) else "",
            **{f"de_{name}": german.get(name, "") for name in TRANSLATABLE_TEXTS},
            "de_questionnaire": json.dumps(german_labels, ensure_ascii=False) if german_labels else "",
        }
        return cls(initial=initial)

    def clean_de_questionnaire(self) -> dict:
        text = self.cleaned_data.get("de_questionnaire", "").strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            raise forms.ValidationError('not valid JSON: expected an object such as {"age": "Alter"}') from None
        if not isinstance(value, dict):
            raise forms.ValidationError('expected a JSON object from field name to label, such as {"age": "Alter"}')
        return value

    def clean_questionnaire(self) -> list | None:
        text = self.cleaned_data.get("questionnaire", "").strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc.msg} (line {exc.lineno})") from None
        except (ValueError, RecursionError):  # a number past Python's digit limit; nesting too deep
            raise forms.ValidationError("not valid JSON: a number too long or nesting too deep") from None
        if not isinstance(value, list):
            raise forms.ValidationError("expected a JSON list of fields")
        return value

    def service_arguments(self) -> dict:
        """Keyword arguments for ``experiments.update_experiment_settings``."""
        d = self.cleaned_data
        config = {
            "trial_subset_size": d.get("trial_subset_size") or 0,
            "catch_trials": d.get("catch_trials") or 0,
            "repeat_trials": d.get("repeat_trials") or 0,
            "trial_comments": d.get("trial_comments") or "off",
            "trial_instructions": d.get("trial_instructions") or "",
            "completion_url": d.get("completion_url") or "",
            "completion_code": d.get("completion_code") or "",
            "screenout_url": d.get("screenout_url") or "",
            "screenout_code": d.get("screenout_code") or "",
            "training": d["training"],
            "level_setting": d["level_setting"],
            "headphone_check": {
                "enabled": d["headphone_check"],
                "tests": list(HEADPHONE_DEFAULTS["tests"]),
                "trials_per_test": d["headphone_trials"],
                "pass_threshold": d["headphone_pass_threshold"],
            },
            "rules": {
                "must_play_all": d["must_play_all"],
                "require_one_100": d["require_one_100"],
                "only_playing_slider_moves": d["only_playing_slider_moves"],
                # Left empty: the default (rules.RULE_DEFAULTS).
                **{
                    k: d[k] if d.get(k) is not None else RULE_DEFAULTS[k]
                    for k in ("min_play_seconds", "min_trial_seconds")
                },
            },
            "analysis": {
                "reference_threshold": d["reference_threshold"],
                "reference_max_fraction": d["reference_max_fraction"],
                "anchor_threshold": d["anchor_threshold"],
                "anchor_max_fraction": d["anchor_max_fraction"],
            },
            "questionnaire": d["questionnaire"],
            "translations": {
                "de": {
                    **{name: d.get(f"de_{name}") or "" for name in TRANSLATABLE_TEXTS},
                    "questionnaire": d.get("de_questionnaire") or {},
                }
            },
        }
        fields = {
            k: d[k]
            for k in (
                "title",
                "description",
                "instructions",
                "consent_text",
                "estimated_minutes",
                "loudness_target_lufs",
            )
        }
        return {"config": config, **fields}


class WebMushraImportForm(forms.Form):
    config = forms.FileField(label="webMUSHRA config (YAML)")
    audio = MultipleFileField(
        required=False,
        label="Audio files",
        help_text="Every WAV the config names (matched by file name), or one ZIP of them.",
    )
    allow_partial = forms.BooleanField(
        required=False,
        label="Import the supported pages and list the others",
        help_text="Without this, a config with page types this platform does not run is refused.",
    )


def builder_forms(experiment: Experiment) -> dict[str, forms.Form]:
    """The empty builder forms the experiment page shows."""
    kinds = set(experiment.conditions.values_list("kind", flat=True))
    return {
        "excerpt_form": ExcerptUploadForm(),
        "checkpoint_form": CheckpointUploadForm(),
        "condition_form": ConditionForm(experiment=experiment),
        "anchors_form": AnchorsForm(
            initial={"anchor35": ConditionKind.ANCHOR_35 in kinds, "anchor70": ConditionKind.ANCHOR_70 in kinds}
        ),
    }


# ----------------------------------------------------------------------------- paradigm blocks


class BlockForm(forms.Form):
    """One block of ``config["blocks"]`` (``webmushra.paradigms``): this form reads the row's
    input; ``rules.validate_config`` (``paradigms.clean_blocks``) checks its meaning."""

    paradigm = forms.ChoiceField(
        choices=[("", "(no block)")] + list(PARADIGMS.items()), required=False, label="Paradigm"
    )
    repetitions = forms.IntegerField(
        required=False,
        label="Repetitions",
        help_text=f"Trials of each design per excerpt: ABX, AB and ABN, 1 to {MAX_REPETITIONS} (more answers per "
        "pair); the other paradigms show each trial once (1).",
    )
    training = forms.BooleanField(required=False, label="Training trials first")
    with_reference = forms.BooleanField(
        required=False, label="Compare the reference too (AB / ABN only)", help_text="Ignored by other paradigms."
    )
    instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        label="Instructions on the block's trial pages",
        help_text="Empty: the experiment's instructions on every trial page.",
    )
    scale = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        label="Category labels (ACR only)",
        help_text="One label per line, worst first, 2 to 11 lines. Empty: ITU-T P.800's five (Bad … Excellent).",
    )
    gold = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        label="Gold questions (ACR / DCR only, ITU-T P.808)",
        help_text="One per line: a condition's label, “=”, the category its answer is known to be (1 = worst), "
        "optionally “± n” for the tolerance (default ± 1), e.g. “Hidden reference = 5” or “Anchor 3.5 kHz = 1 ± 0”. "
        "Each is asked once per participant on a random test excerpt; a participant who answers one outside "
        "its tolerance is left out of the block's analysis.",
    )
    # The block's trapping questions as stored (JSON), carried through a save of the rows; they
    # are added and removed with their own form (services.block_settings.add_trapping).
    trapping = forms.CharField(widget=forms.HiddenInput, required=False)
    de_instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        label="Instructions on the block's trial pages (German)",
        help_text="Empty: German participants read the English instructions.",
    )
    de_scale = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        label="Category labels (German)",
        help_text="One per line, as many as the labels above, in the same order.",
    )
    order = forms.IntegerField(required=False, label="Order", help_text="Blocks run in this order (1 = first).")
    remove = forms.BooleanField(required=False, label="Remove")

    def clean_trapping(self) -> list[Any]:
        text = self.cleaned_data.get("trapping") or ""
        try:
            value = json.loads(text) if text.strip() else []
        except ValueError:
            raise forms.ValidationError("not the trapping questions this page was given; reload it") from None
        return value if isinstance(value, list) else []

    def clean_de_scale(self) -> list[str]:
        """The German labels, one per non-empty line."""
        return [line.strip() for line in (self.cleaned_data.get("de_scale") or "").splitlines() if line.strip()]

    def clean_scale(self) -> list[str]:
        """The labels, one per non-empty line."""
        return [line.strip() for line in (self.cleaned_data.get("scale") or "").splitlines() if line.strip()]

    def clean_gold(self) -> list[dict[str, Any]]:
        """``label = category [± tolerance]`` per line, as ``paradigms.clean_blocks`` reads them."""
        out = []
        for n, line in enumerate((self.cleaned_data.get("gold") or "").splitlines(), start=1):
            if not line.strip():
                continue
            match = re.fullmatch(r"\s*(.+?)\s*=\s*(\d+)\s*(?:(?:±|\+/?-)\s*(\d+))?\s*", line)
            if not match:
                raise forms.ValidationError(
                    f"line {n}: expected “condition label = category”, optionally “± tolerance”, got “{line.strip()}”"
                )
            question: dict[str, Any] = {"condition": match.group(1), "expected": int(match.group(2))}
            if match.group(3) is not None:
                question["tolerance"] = int(match.group(3))
            out.append(question)
        return out

    def block(self) -> dict[str, Any] | None:
        """The block this row asks for (None: an empty or removed row)."""
        d = self.cleaned_data
        if d.get("remove") or not d.get("paradigm"):
            return None
        paradigm = d["paradigm"]
        block: dict[str, Any] = {
            "paradigm": paradigm,
            "repetitions": 1 if d.get("repetitions") is None else d["repetitions"],
            "training": bool(d.get("training")),
            "instructions": d.get("instructions") or "",
            "with_reference": bool(d.get("with_reference")) and paradigm in ("ab", "abn"),
        }
        # Sent only where they apply, so a row switched to another paradigm keeps no stale labels.
        if paradigm == "acr" and d.get("scale"):
            block["scale"] = d["scale"]
        if paradigm in WITH_GOLD and d.get("gold"):
            block["gold"] = d["gold"]
        if paradigm in WITH_GOLD and d.get("trapping"):
            block["trapping"] = d["trapping"]
        german = {"instructions": d.get("de_instructions") or ""}
        if paradigm == "acr" and d.get("de_scale"):
            german["scale"] = d["de_scale"]
        if any(german.values()):
            block["translations"] = {"de": german}
        return block


class BaseBlockFormSet(forms.BaseFormSet):
    """The experiment's blocks as rows of :class:`BlockForm`, plus an empty row to add one."""

    def ordered(self) -> list[tuple[int, dict[str, Any]]]:
        """(row index, block) of the rows that ask for a block, in the order asked for (a row's
        ``order``, then its place on the page)."""
        rows = []
        for index, form in enumerate(self.forms):
            block = form.block()
            if block is not None:
                order = form.cleaned_data.get("order")
                rows.append((index + 1 if order is None else order, index, block))
        rows.sort(key=lambda r: (r[0], r[1]))
        return [(index, block) for _, index, block in rows]

    def show_error(self, field: str, message: str, rows: list[int]) -> None:
        """Put an error of ``validate_config`` ("blocks[n].setting", "blocks[n]" or "blocks") next
        to the row and setting it names; ``rows``: the row index of each block sent."""
        match = re.match(r"blocks\[(\d+)\](?:\.(\w+)(?:\.(\w+))?)?", field)
        if match and 1 <= int(match.group(1)) <= len(rows):
            form = self.forms[rows[int(match.group(1)) - 1]]
            setting = match.group(2)
            if setting == "translations" and match.group(3):  # translations.de.scale[2] -> the de_ fields
                setting = "de_scale" if "scale" in field else "de_instructions"
            form.add_error(setting if setting in form.fields and setting != "trapping" else None, message)
            return
        self.blocks_errors.append(message)

    def stale_trapping(self, stored: list[dict[str, Any]]) -> str:
        """Why the rows cannot be saved when a block's trapping questions changed since the page
        was made (another tab added or removed one): saving would drop or bring them back; ""
        when they did not."""
        for index, form in enumerate(self.forms[: self.initial_form_count()]):
            if index < len(stored) and form.cleaned_data.get("trapping", []) != stored[index]["trapping"]:
                return (
                    f"block {index + 1}'s trapping questions changed since this page was loaded (in another "
                    "tab?); nothing was saved: reload the page and make the change again"
                )
        return ""

    @property
    def blocks_errors(self) -> list[str]:
        if not hasattr(self, "_blocks_errors"):
            self._blocks_errors: list[str] = []
        return self._blocks_errors


#: Rows shown: the blocks (at most 10, ``paradigms.clean_blocks``) and one to add a block; a post
#: of more than 20 rows is refused before any row is read.
BlockFormSet = cast(
    "type[BaseBlockFormSet]",
    forms.formset_factory(BlockForm, formset=BaseBlockFormSet, extra=1, max_num=11, absolute_max=20),
)


def _gold_lines(gold: list[dict[str, Any]]) -> str:
    """A block's gold questions as the form's lines (``label = category ± tolerance``)."""
    return "\n".join(f"{q['condition']} = {q['expected']} ± {q['tolerance']}" for q in gold)


def block_formset(experiment: Experiment, data: Any = None) -> BaseBlockFormSet:
    """The blocks rows of the settings page: bound to ``data``, or showing the experiment's blocks."""
    if data is not None:
        return BlockFormSet(data, prefix="blocks")
    initial = [
        {
            **block,
            "scale": "\n".join(block["scale"]),
            "gold": _gold_lines(block["gold"]),
            "trapping": json.dumps(block["trapping"]),
            "de_instructions": (block["translations"].get("de") or {}).get("instructions", ""),
            "de_scale": "\n".join((block["translations"].get("de") or {}).get("scale", [])),
            "order": n,
            "remove": False,
        }
        for n, block in enumerate(paradigm_blocks(experiment.config), start=1)
    ]
    formset = BlockFormSet(prefix="blocks", initial=initial)
    for form in formset.forms[len(initial) :]:
        form.initial = {"training": True, "repetitions": 1, "order": len(initial) + 1}
    return formset
