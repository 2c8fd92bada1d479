"""Constants the test modules share."""

#: Task backends for override_settings(TASKS=...): run tasks inside the test, or leave them queued.
IMMEDIATE = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
DUMMY = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}
#: A well-formed 32-character CSRF secret to put in a test client's cookie.
CSRF_SECRET = "abcdefghijklmnopqrstuvwxyzABCDEF"
