"""API shapes: read serializers mirror the models; write serializers check input shape only
(the services check its meaning and answer with ``ServiceError``)."""

from __future__ import annotations

from rest_framework import serializers

from ..forms import SAMPLE_RATES
from ..models import Checkpoint, Condition, Excerpt, Experiment, Participant, RenderJob, Report
from ..paradigms import MAX_REPETITIONS, MUSHRA, PARADIGMS


class ExcerptSerializer(serializers.ModelSerializer):
    duration_s = serializers.FloatField(read_only=True)

    class Meta:
        model = Excerpt
        fields = [
            "id",
            "name",
            "position",
            "is_training",
            "sample_rate",
            "frames",
            "channels",
            "duration_s",
            "warnings",
            "created_at",
        ]


class CheckpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = Checkpoint
        fields = [
            "id",
            "name",
            "format",
            "architecture",
            "sample_rate",
            "knob_names",
            "summary",
            "sha256",
            "size",
            "created_at",
        ]


class ConditionSerializer(serializers.ModelSerializer):
    ir = serializers.JSONField(
        source="ir_info",
        read_only=True,
        help_text="The cabinet impulse response applied after the model: name, sample_rate, frames, seconds, "
        "channels, sha256 (empty: none).",
    )

    class Meta:
        model = Condition
        fields = ["id", "kind", "label", "display_name", "checkpoint", "knobs", "position", "ir"]


class ExperimentSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    participant_url = serializers.SerializerMethodField()

    class Meta:
        model = Experiment
        fields = [
            "id",
            "title",
            "description",
            "status",
            "owner",
            "sample_rate",
            "loudness_target_lufs",
            "instructions",
            "consent_text",
            "estimated_minutes",
            "config",
            "participant_url",
            "created_at",
            "opened_at",
            "closed_at",
        ]

    def get_participant_url(self, obj: Experiment) -> str | None:
        if obj.status != Experiment.Status.OPEN:
            return None
        request = self.context.get("request")
        path = f"/t/{obj.public_token}/"
        return request.build_absolute_uri(path) if request else path


class ExperimentDetailSerializer(ExperimentSerializer):
    excerpts = ExcerptSerializer(many=True, read_only=True)
    checkpoints = CheckpointSerializer(many=True, read_only=True)
    conditions = ConditionSerializer(many=True, read_only=True)

    class Meta(ExperimentSerializer.Meta):
        fields = ExperimentSerializer.Meta.fields + ["excerpts", "checkpoints", "conditions"]


class ExperimentCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    sample_rate = serializers.ChoiceField(choices=[r for r, _ in SAMPLE_RATES], default=48000)
    anchors = serializers.BooleanField(default=True, help_text="Add the 3.5 kHz and 7 kHz low-pass anchors.")
    config = serializers.JSONField(required=False, default=dict)


class ExperimentUpdateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    instructions = serializers.CharField(required=False, allow_blank=True)
    consent_text = serializers.CharField(required=False, allow_blank=True)
    estimated_minutes = serializers.IntegerField(required=False, min_value=1)
    loudness_target_lufs = serializers.FloatField(required=False, allow_null=True)
    config = serializers.JSONField(required=False, help_text="Merged into the stored settings.")


class ExcerptUploadSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    dry = serializers.FileField(help_text="The dry input (WAV or FLAC).")
    reference = serializers.FileField(help_text="The real device's recording of it.")
    is_training = serializers.BooleanField(
        required=False, default=False, help_text="Heard in training trials only, never in the test."
    )


class CheckpointUploadSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    file = serializers.FileField()
    config = serializers.FileField(required=False, allow_null=True, default=None)
    sample_rate = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=8000)
    slimmable_size = serializers.FloatField(
        required=False,
        allow_null=True,
        default=None,
        min_value=0.0,
        max_value=1.0,
        help_text="NAM only: the size (0..1) a slimmable model runs at; default the full model.",
    )


class ConditionCreateSerializer(serializers.Serializer):
    checkpoint = serializers.IntegerField(help_text="Id of a checkpoint of this experiment.")
    # The stubs see Field.label (a str); DRF's metaclass takes declared fields off the class.
    label = serializers.CharField(max_length=120)  # type: ignore[assignment]
    knobs = serializers.DictField(child=serializers.FloatField(), required=False, default=dict)
    display_name = serializers.CharField(
        max_length=60, required=False, allow_blank=True, default="", help_text="The name training trials show."
    )


class ConditionIRUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A mono WAV or FLAC impulse response, at most 10 s.")


class ReportSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True, help_text="queued, running, done or failed.")
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Report
        fields = ["id", "status", "progress", "error", "created_at", "finished_at", "download_url"]

    def get_download_url(self, obj: Report) -> str | None:
        if obj.status != Report.Status.DONE:
            return None
        request = self.context.get("request")
        path = f"/api/experiments/{obj.experiment_id}/report/{obj.pk}/download/"
        return request.build_absolute_uri(path) if request else path


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="What was wrong, starting with the field or file it concerns.")


# --- Answer shapes that are not model rows: they type the OpenAPI description (and the
# participant list), so a client generated from it sees every field.


class RenderJobStatusSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=RenderJob.Kind.choices)
    status = serializers.ChoiceField(choices=RenderJob.Status.choices)
    progress = serializers.FloatField(help_text="0..1 within this job.")
    condition = serializers.CharField(allow_null=True, help_text="The condition's label (null for an item job).")
    excerpt = serializers.CharField(help_text="The excerpt's name.")
    attempts = serializers.IntegerField()
    error = serializers.CharField(allow_blank=True, help_text="Why it failed (empty unless failed).")


class RenderCountsSerializer(serializers.Serializer):
    """Jobs per status."""

    pending = serializers.IntegerField()
    queued = serializers.IntegerField()
    running = serializers.IntegerField()
    done = serializers.IntegerField()
    failed = serializers.IntegerField()
    canceled = serializers.IntegerField()


class RenderStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Experiment.Status.choices, help_text="The experiment's status.")
    overall = serializers.FloatField(help_text="Render progress over all jobs, 0..1.")
    counts = RenderCountsSerializer()
    jobs = RenderJobStatusSerializer(many=True)


class ParticipantSummarySerializer(serializers.Serializer):
    """Counts of the real participants (pilot sessions counted apart in ``pilot``)."""

    started = serializers.IntegerField()
    completed = serializers.IntegerField()
    screened_out = serializers.IntegerField()
    median_duration_s = serializers.FloatField(allow_null=True, help_text="Of the completed sessions.")
    by_stage = serializers.DictField(child=serializers.IntegerField(), help_text="Stage -> participants.")
    flagged = serializers.IntegerField(help_text="Participants with at least one flagged test trial.")
    excluded = serializers.IntegerField(help_text="Participants excluded by hand.")
    pilot = serializers.IntegerField(help_text="Pilot sessions.")


class StatusSerializer(RenderStatusSerializer):
    participants = ParticipantSummarySerializer()


class MetricRowSerializer(serializers.Serializer):
    condition = serializers.CharField(help_text="The condition's label.")
    item = serializers.CharField(help_text="The excerpt's name.")
    metric = serializers.CharField(help_text="esr, mr_stft, delta_lufs, ...")
    value = serializers.FloatField()


class MetricsSerializer(serializers.Serializer):
    metrics = MetricRowSerializer(many=True)


class RatingRowSerializer(serializers.Serializer):
    participant = serializers.CharField(help_text="P<id>, as in the participant list.")
    item = serializers.CharField()
    condition = serializers.CharField()
    kind = serializers.CharField(help_text="reference, anchor35, anchor70 or model.")
    rating = serializers.IntegerField(help_text="0..100.")
    trial_position = serializers.IntegerField(allow_null=True, help_text="The order heard, 0 = first.")
    submitted_at = serializers.DateTimeField()
    signal_position = serializers.IntegerField(allow_null=True, help_text="The slider it sat on, 1 = first.")
    plays = serializers.IntegerField(allow_null=True)
    listen_ms = serializers.FloatField(allow_null=True, help_text="As the page counted it.")
    time_on_page_ms = serializers.FloatField(allow_null=True, help_text="As the page counted it.")
    stage = serializers.ChoiceField(choices=Participant.Stage.choices)
    flags = serializers.CharField(allow_blank=True, help_text="The trial's flag codes, ';'-separated.")
    excluded = serializers.BooleanField()
    exclusion_reason = serializers.CharField(allow_blank=True)


class CatchRowSerializer(serializers.Serializer):
    participant = serializers.CharField()
    item = serializers.CharField()
    trial_position = serializers.IntegerField(allow_null=True)
    replaced_condition = serializers.CharField(allow_null=True)
    duplicate_rating = serializers.IntegerField(allow_null=True)
    hidden_reference_rating = serializers.IntegerField(allow_null=True)
    passed = serializers.BooleanField(allow_null=True)
    submitted_at = serializers.DateTimeField()


class RepeatRowSerializer(serializers.Serializer):
    participant = serializers.CharField()
    item = serializers.CharField()
    condition = serializers.CharField()
    kind = serializers.CharField()
    rating = serializers.IntegerField(help_text="0..100, the repeated presentation's score.")
    trial_position = serializers.IntegerField(allow_null=True, help_text="Where the repeat was heard, 0 = first.")
    submitted_at = serializers.DateTimeField()
    repeat = serializers.IntegerField(help_text="1: the second presentation of the trial.")
    excluded = serializers.BooleanField()


class CommentRowSerializer(serializers.Serializer):
    participant = serializers.CharField()
    item = serializers.CharField()
    trial_position = serializers.IntegerField(allow_null=True)
    comment = serializers.CharField(help_text="The participant's comment on the trial.")
    submitted_at = serializers.DateTimeField()


class RatingsSerializer(serializers.Serializer):
    experiment = serializers.IntegerField()
    ratings = RatingRowSerializer(many=True, help_text="First presentations only.")
    catch_trials = CatchRowSerializer(many=True, help_text="Answered catch trials, kept out of the ratings.")
    repeat_trials = RepeatRowSerializer(
        many=True, help_text="Scores of repeated trials (test-retest), kept out of the ratings."
    )
    comments = CommentRowSerializer(many=True, help_text="Participants' comments on their trials.")


class ParticipantRowSerializer(serializers.Serializer):
    """One participant session as the researcher's participant page lists it, without the
    Prolific ids, the questionnaire answers or anything else a person could be known by."""

    id = serializers.CharField(help_text="P<id>, as in the ratings.")
    pk = serializers.IntegerField()
    pilot = serializers.BooleanField()
    stage = serializers.ChoiceField(choices=Participant.Stage.choices)
    started_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
    duration_s = serializers.FloatField(allow_null=True)
    trials_answered = serializers.IntegerField(help_text="Trials saved, training included.")
    trials_planned = serializers.IntegerField()
    flagged_trials = serializers.IntegerField(help_text="Test trials with at least one quality flag.")
    flags = serializers.DictField(child=serializers.IntegerField(), help_text="Flag code -> trials.")
    excluded = serializers.BooleanField()
    excluded_at = serializers.DateTimeField(allow_null=True)
    exclusion_reason = serializers.CharField(allow_blank=True)


class ParticipantListSerializer(serializers.Serializer):
    experiment = serializers.IntegerField()
    participants = ParticipantRowSerializer(many=True)


# --- Paradigm blocks (config["blocks"], webmushra.paradigms): the settings and what each block
# gives every participant (services.block_settings.block_plan).


class GoldQuestionSerializer(serializers.Serializer):
    condition = serializers.CharField(help_text="The label of one of the experiment's conditions.")
    expected = serializers.IntegerField(help_text="The category its answer is known to be (1 = worst).")
    tolerance = serializers.IntegerField(default=1, help_text="Categories an answer may be off and pass (P.808: 1).")


class TrappingQuestionSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="The stored message (upload it with POST .../blocks/{n}/trapping/).")
    answer = serializers.IntegerField(help_text="The category the message asks for.")


class BlockSerializer(serializers.Serializer):
    """One block. The server checks blocks with ``rules.validate_config`` (``paradigms.clean_blocks``):
    a wrong one is answered 400 ``{"error", "field": "blocks[n].setting"}``, nothing stored."""

    paradigm = serializers.ChoiceField(choices=list(PARADIGMS.items()), default=MUSHRA)
    repetitions = serializers.IntegerField(
        default=1,
        min_value=1,
        max_value=MAX_REPETITIONS,
        help_text="Trials of each design per excerpt (ABX, AB, ABN: more answers per pair); the others: 1.",
    )
    training = serializers.BooleanField(
        default=True, help_text="Training trials (from the training excerpts) first, when the flow has training on."
    )
    instructions = serializers.CharField(
        default="",
        allow_blank=True,
        max_length=5000,
        help_text="Shown on the block's trial pages (empty: the experiment's).",
    )
    with_reference = serializers.BooleanField(
        default=False, help_text="AB / ABN: the hidden reference is one of the compared conditions too."
    )
    scale = serializers.ListField(
        child=serializers.CharField(),
        default=list,
        help_text="ACR: the category labels, worst first, 2 to 11 (empty: ITU-T P.800's five).",
    )
    gold = GoldQuestionSerializer(many=True, default=list, help_text="ACR / DCR: gold questions (ITU-T P.808).")
    trapping = TrappingQuestionSerializer(
        many=True, default=list, help_text="ACR / DCR: trapping questions (ITU-T P.808 §6.3.8)."
    )
    translations = serializers.DictField(
        child=serializers.DictField(),
        default=dict,
        help_text='The block\'s texts in other languages: {"de": {"instructions": ..., "scale": [...]}}.',
    )


class TrappingUploadSerializer(serializers.Serializer):
    message = serializers.FileField(help_text="WAV or FLAC, 0.5 to 15 s: a voice asking for one category.")
    answer = serializers.IntegerField(help_text="The category the message asks for (1 = worst).")


class BlocksWriteSerializer(serializers.Serializer):
    blocks = BlockSerializer(many=True, help_text="1 to 10 blocks, run in this order; at most one MUSHRA block.")


class AbxPlanSerializer(serializers.Serializer):
    true_proportion = serializers.FloatField(help_text="The proportion correct planned for.")
    power_target = serializers.FloatField()
    alpha = serializers.FloatField(help_text="One-sided level of the exact binomial test.")
    trials_needed = serializers.IntegerField(
        allow_null=True, help_text="evaluation.paradigms.abx.trials_needed: the first count reaching the power."
    )
    trials_stable = serializers.IntegerField(allow_null=True, help_text="The count from which every larger one does.")
    pairs = serializers.IntegerField(help_text="Pairs (hidden reference, model) the block tests.")
    per_pair_per_participant = serializers.IntegerField(help_text="Test excerpts × repetitions.")
    per_participant = serializers.IntegerField(help_text="All the block's test trials of one participant.")
    power_per_participant = serializers.FloatField(help_text="Power of one participant's own test of a pair.")
    one_participant_enough = serializers.BooleanField()
    participants_pooled = serializers.IntegerField(
        allow_null=True, help_text="Participants whose pooled answers to a pair give the trials needed."
    )


class BlockPlanRowSerializer(BlockSerializer):
    number = serializers.IntegerField(help_text="1 = the first block.")
    title = serializers.CharField()
    designs = serializers.IntegerField(help_text="Trials per test excerpt and repetition (paradigms.designs).")
    test_trials = serializers.IntegerField(help_text="Test trials each participant gets in this block.")
    training_trials = serializers.IntegerField()
    catch_trials = serializers.IntegerField(help_text="MUSHRA block: catch trials, at most.")
    repeat_trials = serializers.IntegerField(help_text="MUSHRA block: repeated trials, at most.")
    gold_trials = serializers.IntegerField(help_text="ACR / DCR: gold questions each participant gets.")
    trapping_trials = serializers.IntegerField(help_text="ACR / DCR: trapping questions each participant gets.")
    seconds_per_trial = serializers.FloatField()
    minutes = serializers.FloatField(help_text="A rough estimate: each signal heard twice, plus time to answer.")
    problem = serializers.CharField(allow_blank=True, help_text="Why the block cannot open (empty: it can).")
    fix = serializers.CharField(allow_blank=True, help_text="What to change so that it can.")
    abx = AbxPlanSerializer(allow_null=True)


class BlocksSerializer(serializers.Serializer):
    blocks = BlockSerializer(many=True, help_text="The experiment's blocks, defaults filled in.")
    editable = serializers.BooleanField(help_text="Whether the blocks can still change (draft or rendered).")
    plan = BlockPlanRowSerializer(many=True, help_text="Per block: what each participant gets.")
    test_trials = serializers.IntegerField()
    training_trials = serializers.IntegerField()
    minutes = serializers.FloatField()
    problems = serializers.IntegerField(help_text="Blocks that cannot open as the experiment stands.")
    notes = serializers.ListField(child=serializers.CharField())
