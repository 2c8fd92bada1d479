"""The project's settings for the test suite, with a throwaway secret key and a fast hasher.

Everything else, DATABASE_URL included, comes from the environment as in production.
"""

import os

os.environ["QUALIFIER_IGNORE_DOTENV"] = "1"
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-production")

from qualifier.settings import *  # noqa: F403

# Users are created in many tests; the production hasher's work factor is deliberate slowness.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Every test starts from an empty cache (tests/conftest.py clears it), also tests without a
# database, so the suite counts in memory unless CACHE_URL says otherwise. The production
# default (the database cache, shared by processes) is tested with real processes in
# tests/test_trusted_clients.py.
if "CACHE_URL" not in os.environ:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
