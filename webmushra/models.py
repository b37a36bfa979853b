"""Experiments, conditions, rendering jobs, trials, participants and ratings.

Vocabulary follows ITU-R BS.1534-3: an *excerpt* (item) is rated on one MUSHRA *trial*
against the open *reference*; the blinded *conditions* are the hidden reference, the
3.5 kHz and 7 kHz low-pass *anchors* (§5.1) and the models under test.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext, gettext_noop

from evaluation import kinds
from modelrunner import anchors


def new_token() -> str:
    """A random URL-safe token (128 bits): no ids, names or counters."""
    return secrets.token_urlsafe(16)


def upload_path(instance: models.Model, filename: str) -> str:
    """Uploaded files live under a random folder so names never collide or leak."""
    return f"uploads/{uuid.uuid4().hex}/{filename}"


class ConditionKind(models.TextChoices):
    """Condition kinds (BS.1534-3 §5); the values are those of ``evaluation.kinds``."""

    MODEL = kinds.MODEL, "Model"
    HIDDEN_REFERENCE = kinds.HIDDEN_REFERENCE, "Hidden reference"
    ANCHOR_35 = kinds.ANCHOR35, "3.5 kHz low-pass anchor"
    ANCHOR_70 = kinds.ANCHOR70, "7 kHz low-pass anchor"
    #: A condition uploaded as audio files (e.g. imported from webMUSHRA), no checkpoint.
    PRERENDERED = "prerendered", "Pre-rendered audio"

    @classmethod
    def anchor_cutoff_hz(cls, kind: str) -> float | None:
        """The low-pass cut-off of an anchor kind (``modelrunner.anchors``), None for other kinds."""
        cutoffs: dict[str, float] = {cls.ANCHOR_35: anchors.LOW_ANCHOR_HZ, cls.ANCHOR_70: anchors.MID_ANCHOR_HZ}
        return cutoffs.get(kind)

    @classmethod
    def analysis_kind(cls, kind: str) -> str:
        """The kind the analysis sees: every system under test is a model."""
        return kinds.MODEL if kind == cls.PRERENDERED else kind


#: The label a fixed condition gets when the platform makes it (the one table of them).
FIXED_CONDITION_LABELS: dict[str, str] = {
    ConditionKind.HIDDEN_REFERENCE: "Hidden reference",
    ConditionKind.ANCHOR_35: "Anchor 3.5 kHz",
    ConditionKind.ANCHOR_70: "Anchor 7 kHz",
}

#: What training trials call a fixed condition when the researcher gave it no display name.
TRAINING_NAMES: dict[str, str] = {
    ConditionKind.HIDDEN_REFERENCE: gettext_noop("Reference"),
    ConditionKind.ANCHOR_35: gettext_noop("Low anchor"),
    ConditionKind.ANCHOR_70: gettext_noop("Mid anchor"),
}


def training_names(conditions: Iterable[Condition]) -> dict[int, str]:
    """Condition id -> the name a training trial shows: the researcher's display name, else a
    neutral default ("Reference", "Low anchor", "System 1", ..., in the active language); never the
    analysis label."""
    names: dict[int, str] = {}
    systems = 0
    for c in sorted(conditions, key=lambda c: (c.position, c.pk)):
        if c.kind not in TRAINING_NAMES:
            systems += 1
        default = TRAINING_NAMES.get(c.kind)
        names[c.pk] = c.display_name or (gettext(default) if default else gettext("System %(n)s") % {"n": systems})
    return names


#: The low-pass anchors of BS.1534-3 §5.1, in their order on the page.
ANCHOR_KINDS: tuple[str, ...] = (ConditionKind.ANCHOR_35, ConditionKind.ANCHOR_70)


class Experiment(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RENDERING = "rendering", "Rendering"
        READY = "ready", "Rendered"
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    #: States in which excerpts, conditions and settings may change and a render may start.
    EDITABLE_STATUSES = frozenset({Status.DRAFT, Status.READY})

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="experiments")
    shared_with = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="shared_experiments")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, help_text="Shown on the landing page: what the study is.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    sample_rate = models.PositiveIntegerField(default=48000)
    loudness_target_lufs = models.FloatField(
        null=True, blank=True, help_text="Empty: align every condition to its reference's loudness."
    )
    public_token = models.CharField(max_length=32, unique=True, default=new_token, editable=False)
    instructions = models.TextField(blank=True)
    consent_text = models.TextField(blank=True)
    estimated_minutes = models.PositiveIntegerField(default=15)
    #: Flow and rule settings (screening thresholds, questionnaire fields, subset size, ...).
    config = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title

    @property
    def is_editable(self) -> bool:
        return self.status in self.EDITABLE_STATUSES


class Excerpt(models.Model):
    """One item: the dry input and the real device's recording of it (the reference)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="excerpts")
    name = models.CharField(max_length=200)
    position = models.PositiveIntegerField(default=0)
    dry_file = models.FileField(upload_to=upload_path, max_length=300)
    reference_file = models.FileField(upload_to=upload_path, max_length=300)
    #: Optional context recorded just before the excerpt, for models that estimate their
    #: starting state from it (SPTMod's look-back; Bourdin et al.).
    lookback_dry_file = models.FileField(upload_to=upload_path, max_length=300, blank=True)
    lookback_reference_file = models.FileField(upload_to=upload_path, max_length=300, blank=True)
    #: A training excerpt is heard only in training trials and never in the test, so nothing a
    #: participant learns in training (labels, URLs, audio) can identify a test trial's signals.
    is_training = models.BooleanField(default=False)
    sample_rate = models.PositiveIntegerField()
    frames = models.PositiveBigIntegerField()
    channels = models.PositiveSmallIntegerField(default=1)
    warnings = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


class Checkpoint(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="checkpoints")
    name = models.CharField(max_length=200)
    file = models.FileField(upload_to=upload_path, max_length=300)
    config_file = models.FileField(upload_to=upload_path, max_length=300, blank=True)
    format = models.CharField(max_length=32)
    architecture = models.CharField(max_length=120)
    summary = models.JSONField(default=dict, blank=True)
    sample_rate = models.PositiveIntegerField()
    knob_names = models.JSONField(default=list, blank=True)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.architecture})"


class Condition(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="conditions")
    kind = models.CharField(max_length=20, choices=ConditionKind.choices)
    checkpoint = models.ForeignKey(
        Checkpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="conditions"
    )
    knobs = models.JSONField(default=dict, blank=True)
    #: Used only in analysis and on training trials; never shown on test trials.
    label = models.CharField(max_length=120)
    #: What training trials show for this condition (the researcher's choice); never ``label``.
    display_name = models.CharField(max_length=60, blank=True)
    position = models.PositiveIntegerField(default=0)
    #: A cabinet impulse response applied after the model (FFT convolution at the model's rate).
    ir_file = models.FileField(upload_to=upload_path, max_length=300, blank=True)
    #: What the impulse response was: the uploaded name, its rate, length and SHA-256 (provenance).
    ir_info = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "label"], name="condition_label_unique"),
            models.CheckConstraint(
                condition=Q(kind="model", checkpoint__isnull=False) | (~Q(kind="model") & Q(checkpoint__isnull=True)),
                name="condition_checkpoint_iff_model",
            ),
        ]

    def __str__(self) -> str:
        return self.label


class PrerenderedAudio(models.Model):
    """The audio of a pre-rendered condition for one excerpt (as uploaded; aligned at render)."""

    condition = models.ForeignKey(Condition, on_delete=models.CASCADE, related_name="prerendered_audio")
    excerpt = models.ForeignKey(Excerpt, on_delete=models.CASCADE, related_name="prerendered_audio")
    file = models.FileField(upload_to=upload_path, max_length=300)
    sample_rate = models.PositiveIntegerField()
    frames = models.PositiveBigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["condition", "excerpt"], name="one_prerendered_per_cell")]


class RenderJob(models.Model):
    """A unit of background work. The row is the truth; the broker message carries its id."""

    class Kind(models.TextChoices):
        MODEL = "model", "Render a model condition"
        ITEM = "item", "Prepare an item's stimuli (anchors, loudness)"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for other jobs"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELED = "canceled", "Cancelled"

    #: States in which a job still has work coming (the experiment is rendering while any has).
    ACTIVE_STATUSES = frozenset({Status.QUEUED, Status.RUNNING})

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="render_jobs")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    condition = models.ForeignKey(
        Condition, null=True, blank=True, on_delete=models.CASCADE, related_name="render_jobs"
    )
    excerpt = models.ForeignKey(Excerpt, on_delete=models.CASCADE, related_name="render_jobs")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True)
    progress = models.FloatField(default=0.0)
    attempts = models.PositiveIntegerField(default=0)
    #: Changes on every claim, so a late write from a lost worker is recognised and ignored.
    claim_token = models.CharField(max_length=32, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    report = models.JSONField(default=dict, blank=True)
    output_file = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["condition", "excerpt"], condition=Q(kind="model"), name="one_model_job_per_cell"
            ),
            models.UniqueConstraint(fields=["excerpt"], condition=Q(kind="item"), name="one_item_job_per_excerpt"),
        ]

    def __str__(self) -> str:
        return f"RenderJob {self.pk} ({self.kind}, {self.status})"


class Stimulus(models.Model):
    """A rendered, loudness-aligned file for one condition and excerpt, as participants hear it."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="stimuli")
    excerpt = models.ForeignKey(Excerpt, on_delete=models.CASCADE, related_name="stimuli")
    condition = models.ForeignKey(Condition, on_delete=models.CASCADE, related_name="stimuli")
    file = models.CharField(max_length=300, help_text="Path relative to MEDIA_ROOT.")
    sample_rate = models.PositiveIntegerField()
    frames = models.PositiveBigIntegerField()
    channels = models.PositiveSmallIntegerField()
    size = models.PositiveBigIntegerField()
    loudness_lufs = models.FloatField(null=True)
    gain_db = models.FloatField(default=0.0)
    peak_dbfs = models.FloatField(null=True)
    #: Objective metrics of the raw model output against the device recording.
    metrics = models.JSONField(default=dict, blank=True)
    #: How it was made: the model's starting state (look-back or zero state with warm-up),
    #: render path, loudness gain. Never shown to participants.
    render_info = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["excerpt", "condition"], name="one_stimulus_per_cell")]

    def __str__(self) -> str:
        return f"Stimulus {self.condition_id}/{self.excerpt_id}"


class Trial(models.Model):
    """One page of a block: a MUSHRA page (one excerpt, its reference and every condition) or a
    trial of another paradigm (``webmushra.paradigms``) comparing the conditions in ``design``."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="trials")
    excerpt = models.ForeignKey(Excerpt, on_delete=models.CASCADE, related_name="trials")
    is_training = models.BooleanField(default=False)
    #: A catch trial: the excerpt's signals with one model's audio replaced by the reference
    #: (served through tokens of its own); rated like any trial, never part of the analysis.
    is_catch = models.BooleanField(default=False)
    #: A repeated trial (test-retest, BS.1534-3 listener reliability): the test trial it presents
    #: again, through tokens of its own; its scores are kept on its response
    #: (``TrialResponse.repeat``), never as ratings, so the analysis sees the first presentation.
    repeat_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="repeats")
    position = models.PositiveIntegerField(default=0)
    #: The block (index into ``config["blocks"]``, ``paradigms.blocks``) and its paradigm.
    block = models.PositiveSmallIntegerField(default=0)
    paradigm = models.CharField(max_length=12, default="mushra")
    #: The condition ids the trial compares (empty for MUSHRA and ranking: every condition).
    design = models.JSONField(default=list, blank=True)
    #: Tells apart the trials of one block and excerpt ("" for a MUSHRA page): paradigm,
    #: conditions and repetition (``paradigms.design_key``).
    design_key = models.CharField(max_length=64, default="", blank=True)

    class Meta:
        ordering = ["is_training", "is_catch", "block", "position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "block", "excerpt", "is_training", "is_catch", "design_key"],
                condition=Q(repeat_of__isnull=True),
                name="one_trial_per_excerpt",
            ),
            models.UniqueConstraint(
                fields=["repeat_of"], condition=Q(repeat_of__isnull=False), name="one_repeat_per_trial"
            ),
        ]

    def __str__(self) -> str:
        return f"{'Training' if self.is_training else 'Trial'} {self.position + 1}: {self.excerpt}"


class Participant(models.Model):
    class Stage(models.TextChoices):
        CONSENT = "consent", "Consent"
        SCREENING = "screening", "Headphone check"
        LEVEL = "level", "Level setting"
        TRAINING = "training", "Training"
        TRIALS = "trials", "Trials"
        QUESTIONNAIRE = "questionnaire", "Questionnaire"
        COMPLETED = "completed", "Completed"
        SCREENED_OUT = "screened_out", "Screened out"
        DECLINED = "declined", "Declined consent"

    #: Stages a session ends in: its stimulus and reference URLs answer 410 Gone from then on.
    FINISHED_STAGES = frozenset({Stage.COMPLETED, Stage.SCREENED_OUT, Stage.DECLINED})

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="participants")
    token = models.CharField(max_length=32, unique=True, default=new_token, editable=False)
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.CONSENT)
    prolific_pid = models.CharField(max_length=64, blank=True)
    prolific_study_id = models.CharField(max_length=64, blank=True)
    prolific_session_id = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    #: Per-participant plan: trial order and, per trial, the shuffled conditions.
    plan = models.JSONField(default=list, blank=True)
    screening = models.JSONField(default=dict, blank=True)
    level = models.JSONField(default=dict, blank=True)
    questionnaire = models.JSONField(default=dict, blank=True)
    completion_code = models.CharField(max_length=64, blank=True)
    #: Where the participant was sent at the end (Prolific completion or screen-out), as recorded.
    exit_code = models.CharField(max_length=64, blank=True)
    exit_url = models.CharField(max_length=500, blank=True)
    #: A pilot session (the researcher's pilot link): kept apart from the data, out of the
    #: exports and the analysis unless asked for.
    is_pilot = models.BooleanField(default=False)
    #: Excluded by the researcher (kept in the data, left out of the analysis, reason reported).
    excluded_at = models.DateTimeField(null=True, blank=True)
    exclusion_reason = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    consented_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"Participant {self.pk}"


class DataDeletion(models.Model):
    """A record that participant data was deleted (a withdrawal) or an experiment's personal data
    purged: what, when and by whom, never whose (no participant ids, answers or Prolific ids)."""

    class Kind(models.TextChoices):
        WITHDRAWAL = "withdrawal", "Participant withdrawn"
        PURGE = "purge", "Personal data purged"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="data_deletions")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    at = models.DateTimeField(auto_now_add=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    #: Counts only: sessions, trials and ratings removed (withdrawal) or sessions anonymised (purge).
    counts = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]


class StimulusToken(models.Model):
    """A participant's private, random URL for one stimulus (blinding: no ids in URLs)."""

    token = models.CharField(max_length=32, unique=True, default=new_token)
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="stimulus_tokens")
    stimulus = models.ForeignKey(Stimulus, on_delete=models.CASCADE, related_name="+")
    #: The server's own record of delivery (the rules check playback against it).
    first_fetched_at = models.DateTimeField(null=True, blank=True)
    fetches = models.PositiveIntegerField(default=0)
    #: Set for a catch trial's own tokens: the trial, and the signal (condition) this token
    #: stands for there; the same audio in a test trial has another token.
    trial = models.ForeignKey("Trial", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    slot = models.ForeignKey("Condition", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    #: A paradigm trial's signal key this token serves (``a``, ``b``, ``x``, ...): ABX's X is the
    #: audio of A or B under a token of its own.
    role = models.CharField(max_length=8, blank=True, default="")
    #: Audio this token serves instead of its stimulus's (a trapping question's: the stimulus's
    #: beginning, then the message; ``services.trapping``), a storage name; "" for the stimulus.
    file = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "stimulus"], condition=Q(trial__isnull=True), name="one_token_per_stimulus"
            ),
            models.UniqueConstraint(
                fields=["participant", "trial", "slot", "role"],
                condition=Q(trial__isnull=False),
                name="one_token_per_slot",
            ),
        ]


class TrialResponse(models.Model):
    """One submitted MUSHRA page: what was recorded besides the scores."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="responses")
    trial = models.ForeignKey(Trial, on_delete=models.CASCADE, related_name="responses")
    idempotency_key = models.CharField(max_length=64)
    telemetry = models.JSONField(default=dict, blank=True)
    #: Quality-control flags computed on save (too fast, no playback, straight-lining, ...).
    flags = models.JSONField(default=list, blank=True)
    #: A catch trial's outcome (its scores are kept here, never as ratings): the score of the
    #: reference duplicate, of the hidden reference, and every signal's score by condition id.
    catch = models.JSONField(default=dict, blank=True)
    #: A repeated trial's outcome (its scores are kept here, never as ratings): the trial it
    #: repeats (``of``) and every signal's score by condition id (``scores``).
    repeat = models.JSONField(default=dict, blank=True)
    #: The participant's free-text comment on the trial (``config["trial_comments"]``, at most
    #: ``rules.MAX_COMMENT_CHARS``); personal text, emptied when personal data is purged.
    comment = models.TextField(blank=True, default="")
    #: A trial of another paradigm: the answer as stored (``paradigms.clean_answer``), by
    #: condition id; MUSHRA pages keep their scores as ratings instead.
    answer = models.JSONField(default=dict, blank=True)
    submitted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["participant", "trial"], name="one_response_per_trial"),
        ]


class Rating(models.Model):
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="ratings")
    trial = models.ForeignKey(Trial, on_delete=models.CASCADE, related_name="ratings")
    condition = models.ForeignKey(Condition, on_delete=models.CASCADE, related_name="ratings")
    score = models.PositiveSmallIntegerField(validators=[MinValueValidator(0), MaxValueValidator(100)])
    response = models.ForeignKey(TrialResponse, on_delete=models.CASCADE, related_name="ratings")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["participant", "trial", "condition"], name="one_rating_per_cell"),
            models.CheckConstraint(condition=Q(score__gte=0) & Q(score__lte=100), name="rating_in_range"),
        ]


class Report(models.Model):
    """A report bundle built in the background from an experiment's ratings and metrics."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Building"
        DONE = "done", "Ready"
        FAILED = "failed", "Failed"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="reports")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    #: Path of the zip bundle relative to MEDIA_ROOT.
    file = models.CharField(max_length=300, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Report {self.pk} ({self.status})"
