from django.urls import path

from .views import builder, participant, researcher

participant_patterns = (
    [
        path("t/<str:public_token>/", participant.landing, name="landing"),
        path("p/<str:token>/", participant.resume, name="resume"),
        path("p/<str:token>/consent/", participant.consent, name="consent"),
        path("p/<str:token>/headphones/", participant.screening, name="screening"),
        path("p/<str:token>/headphones/<str:key>", participant.screening_audio, name="screening_audio"),
        path("p/<str:token>/level/", participant.level, name="level"),
        path("p/<str:token>/trial/<int:number>/", participant.trial, name="trial"),
        path("p/<str:token>/trial/<int:number>/reference", participant.reference, name="reference"),
        path("p/<str:token>/questionnaire/", participant.questionnaire, name="questionnaire"),
        path("p/<str:token>/done/", participant.done, name="done"),
        path("s/<str:token>", participant.stimulus, name="stimulus"),
    ],
    "participant",
)

researcher_patterns = (
    [
        path("", researcher.experiments, name="experiments"),
        path("experiments/<int:pk>/", researcher.experiment_detail, name="experiment"),
        path("experiments/<int:pk>/progress.json", researcher.experiment_progress, name="progress"),
        path("experiments/<int:pk>/render/", researcher.start_render, name="render"),
        path("experiments/<int:pk>/render/cancel/", researcher.cancel_render, name="render_cancel"),
        path("experiments/<int:pk>/delete/", researcher.delete_experiment, name="experiment_delete"),
        path("experiments/<int:pk>/open/", researcher.open_experiment, name="open"),
        path("experiments/<int:pk>/close/", researcher.close_experiment, name="close"),
        path("experiments/<int:pk>/ratings.csv", researcher.ratings_csv, name="ratings_csv"),
        path("experiments/<int:pk>/ratings.json", researcher.ratings_json, name="ratings_json"),
        path("experiments/new/", builder.experiment_new, name="experiment_new"),
        path("experiments/import/", builder.import_webmushra, name="import"),
        path("experiments/<int:pk>/settings/", builder.experiment_settings, name="settings"),
        path("experiments/<int:pk>/excerpts/", builder.upload_excerpts, name="excerpts"),
        path("experiments/<int:pk>/excerpts/<int:excerpt_id>/delete/", builder.delete_excerpt, name="excerpt_delete"),
        path(
            "experiments/<int:pk>/excerpts/<int:excerpt_id>/<str:which>.wav",
            researcher.excerpt_audio,
            name="excerpt_audio",
        ),
        path(
            "experiments/<int:pk>/excerpts/<int:excerpt_id>/training/",
            builder.excerpt_training,
            name="excerpt_training",
        ),
        path("experiments/<int:pk>/checkpoints/", builder.upload_checkpoint, name="checkpoints"),
        path(
            "experiments/<int:pk>/checkpoints/<int:checkpoint_id>/delete/",
            builder.delete_checkpoint,
            name="checkpoint_delete",
        ),
        path("experiments/<int:pk>/conditions/", builder.add_condition, name="conditions"),
        path(
            "experiments/<int:pk>/conditions/<int:condition_id>/delete/",
            builder.delete_condition,
            name="condition_delete",
        ),
        path(
            "experiments/<int:pk>/conditions/<int:condition_id>/display-name/",
            builder.condition_display_name,
            name="condition_display_name",
        ),
        path("experiments/<int:pk>/anchors/", builder.set_anchors, name="anchors"),
        path("experiments/<int:pk>/blocks/", builder.split_blocks, name="blocks"),
        path("experiments/<int:pk>/jobs/<int:job_id>/retry/", researcher.retry_job, name="retry"),
        path("experiments/<int:pk>/preview/", researcher.preview, name="preview"),
        path("experiments/<int:pk>/stimuli/<int:stimulus_id>.wav", researcher.stimulus_audio, name="stimulus_audio"),
        path("experiments/<int:pk>/metrics/", researcher.metrics, name="metrics"),
        path("experiments/<int:pk>/monitor/", researcher.monitor, name="monitor"),
        path("experiments/<int:pk>/monitor.json", researcher.monitor_json, name="monitor_json"),
        path(
            "experiments/<int:pk>/participants/<int:participant_id>/exclusion/",
            researcher.participant_exclusion,
            name="participant_exclusion",
        ),
        path("experiments/<int:pk>/mushra.csv", researcher.mushra_csv, name="mushra_csv"),
        path("experiments/<int:pk>/reports/", researcher.reports, name="reports"),
        path("experiments/<int:pk>/reports.json", researcher.reports_json, name="reports_json"),
        path("experiments/<int:pk>/reports/<int:report_id>.zip", researcher.report_download, name="report_download"),
        path("account/api-token/", researcher.api_token, name="api_token"),
    ],
    "researcher",
)
