from django.apps import AppConfig


class QualifierConfig(AppConfig):
    name = "qualifier"
    verbose_name = "Qualification"
    default_auto_field = "django.db.models.BigAutoField"
