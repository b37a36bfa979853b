from django.apps import AppConfig


class WebmushraConfig(AppConfig):
    name = "webmushra"
    verbose_name = "Listening tests"
    default_auto_field = "django.db.models.BigAutoField"
