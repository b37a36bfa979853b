from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from . import views

app_name = "api"

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    path("experiments/", views.ExperimentList.as_view(), name="experiments"),
    path("experiments/<int:pk>/", views.ExperimentDetail.as_view(), name="experiment"),
    path("experiments/<int:pk>/blocks/", views.ExperimentBlocks.as_view(), name="blocks"),
    path("experiments/<int:pk>/blocks/<int:block>/trapping/", views.BlockTrapping.as_view(), name="block_trapping"),
    path(
        "experiments/<int:pk>/blocks/<int:block>/trapping/<int:number>/",
        views.BlockTrappingItem.as_view(),
        name="block_trapping_item",
    ),
    path("experiments/<int:pk>/excerpts/", views.ExcerptList.as_view(), name="excerpts"),
    path("experiments/<int:pk>/checkpoints/", views.CheckpointList.as_view(), name="checkpoints"),
    path("experiments/<int:pk>/conditions/", views.ConditionList.as_view(), name="conditions"),
    path("experiments/<int:pk>/conditions/<int:condition_id>/ir/", views.ConditionIR.as_view(), name="condition_ir"),
    path("experiments/<int:pk>/render/", views.Render.as_view(), name="render"),
    path("experiments/<int:pk>/render/cancel/", views.RenderCancel.as_view(), name="render_cancel"),
    path("experiments/<int:pk>/jobs/<int:job_id>/retry/", views.JobRetry.as_view(), name="job_retry"),
    path("experiments/<int:pk>/open/", views.Open.as_view(), name="open"),
    path("experiments/<int:pk>/close/", views.Close.as_view(), name="close"),
    path("experiments/<int:pk>/status/", views.Status.as_view(), name="status"),
    path("experiments/<int:pk>/metrics/", views.Metrics.as_view(), name="metrics"),
    path("experiments/<int:pk>/participants/", views.Participants.as_view(), name="participants"),
    path("experiments/<int:pk>/ratings/", views.Ratings.as_view(), name="ratings"),
    path("experiments/<int:pk>/ratings.csv", views.RatingsCSV.as_view(), name="ratings_csv"),
    path("experiments/<int:pk>/mushra.csv", views.MushraCSV.as_view(), name="mushra_csv"),
    path("experiments/<int:pk>/webmushra/<str:name>", views.WebMushraFile.as_view(), name="webmushra_file"),
    path("experiments/<int:pk>/report/", views.ReportView.as_view(), name="report"),
    path(
        "experiments/<int:pk>/report/<int:report_id>/download/", views.ReportDownload.as_view(), name="report_download"
    ),
]
