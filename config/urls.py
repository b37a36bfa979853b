from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from webmushra.urls import participant_patterns, researcher_patterns
from webmushra.views import ops

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="researcher:experiments", permanent=False)),
    path("healthz", ops.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    # Sign-in attempts are limited (per address and per account); the rest is Django's.
    path("accounts/login/", ops.login, name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("r/", include(researcher_patterns)),
    path("api/", include("webmushra.api.urls")),
    path("", include(participant_patterns)),
]
