from django.urls import path

from .views import participant, researcher

participant_patterns = (
    [
        path("t/<str:public_token>/", participant.landing, name="landing"),
        path("p/<str:token>/", participant.resume, name="resume"),
        path("p/<str:token>/consent/", participant.consent, name="consent"),
        path("p/<str:token>/headphones/", participant.screening, name="screening"),
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
        path("experiments/<int:pk>/open/", researcher.open_experiment, name="open"),
        path("experiments/<int:pk>/close/", researcher.close_experiment, name="close"),
        path("experiments/<int:pk>/ratings.csv", researcher.ratings_csv, name="ratings_csv"),
        path("experiments/<int:pk>/ratings.json", researcher.ratings_json, name="ratings_json"),
    ],
    "researcher",
)
