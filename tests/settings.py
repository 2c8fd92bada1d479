"""The project's settings for the test suite, with a throwaway secret key.

Everything else, DATABASE_URL included, comes from the environment as in production.
"""

import os

os.environ["QUALIFIER_IGNORE_DOTENV"] = "1"
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-production")

from qualifier.settings import *  # noqa: F403
