"""The project's settings for the test suite, with a throwaway secret key and a fast hasher.

Everything else, DATABASE_URL included, comes from the environment as in production.
"""

import os

os.environ["QUALIFIER_IGNORE_DOTENV"] = "1"
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-production")

from qualifier.settings import *  # noqa: F403

# Users are created in many tests; the production hasher's work factor is deliberate slowness.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
