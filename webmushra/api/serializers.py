"""API shapes: read serializers mirror the models; write serializers check input shape only
(the services check its meaning and answer with ``ServiceError``)."""

from __future__ import annotations

from rest_framework import serializers

from ..forms import SAMPLE_RATES
from ..models import Checkpoint, Condition, Excerpt, Experiment, Report


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
