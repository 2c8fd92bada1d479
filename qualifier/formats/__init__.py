"""The site's date formats (FORMAT_MODULE_PATH): one way of writing a moment on every page and
in the admin, with seconds (sweeps run every few seconds)."""
