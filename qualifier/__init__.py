"""The qualifier project: settings, URLs, and the qualification work itself."""
