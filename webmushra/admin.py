from django.contrib import admin

from .models import (
    Checkpoint,
    Condition,
    Excerpt,
    Experiment,
    Participant,
    PrerenderedAudio,
    Rating,
    RenderJob,
    Report,
    Stimulus,
    Trial,
    TrialResponse,
)


class ConditionInline(admin.TabularInline):
    model = Condition
    extra = 0
    fields = ("position", "kind", "label", "checkpoint", "knobs")


class ExcerptInline(admin.TabularInline):
    model = Excerpt
    extra = 0
    fields = ("position", "name", "sample_rate", "frames", "channels")
    readonly_fields = ("sample_rate", "frames", "channels")


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "status", "sample_rate", "created_at")
    list_filter = ("status",)
    search_fields = ("title", "owner__username")
    readonly_fields = ("public_token", "created_at", "updated_at", "opened_at", "closed_at")
    filter_horizontal = ("shared_with",)
    inlines = [ExcerptInline, ConditionInline]


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ("name", "experiment", "format", "architecture", "sample_rate", "size")
    list_filter = ("format",)
    readonly_fields = ("format", "architecture", "summary", "sample_rate", "knob_names", "sha256", "size")


@admin.register(RenderJob)
class RenderJobAdmin(admin.ModelAdmin):
    list_display = ("id", "experiment", "kind", "condition", "excerpt", "status", "progress", "attempts", "heartbeat")
    list_filter = ("status", "kind")
    readonly_fields = ("claim_token", "worker", "heartbeat", "queued_at", "started_at", "finished_at", "report")


@admin.register(Stimulus)
class StimulusAdmin(admin.ModelAdmin):
    list_display = ("id", "experiment", "excerpt", "condition", "loudness_lufs", "gain_db", "peak_dbfs", "size")


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    list_display = ("id", "experiment", "stage", "prolific_pid", "started_at", "completed_at")
    list_filter = ("stage",)
    readonly_fields = ("token", "plan")


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ("participant", "trial", "condition", "score", "created_at")


admin.site.register(Excerpt)
admin.site.register(Condition)
admin.site.register(Trial)
admin.site.register(TrialResponse)
admin.site.register(PrerenderedAudio)


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ("id", "experiment", "status", "progress", "created_at", "finished_at")
    list_filter = ("status",)
    readonly_fields = ("file", "summary", "error", "started_at", "finished_at")
