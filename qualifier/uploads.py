"""The upload limit, enforced while the request body streams in, before anything is stored.

Django parses a multipart body when a view (or the CSRF check) first reads `request.POST`, and
by default writes each file to memory or a temporary file as it comes. `UploadLimitHandler`
comes first among the upload handlers: it refuses a request whose Content-Length is already
over the limit, without reading the file at all, and stops any file whose bytes, counted as
they arrive, go over it. The fields sent before the file (the CSRF token, the criteria) are
still read, so the page can answer with the form and its error.
"""

from __future__ import annotations

from typing import Any

from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest

from .conf import conf

#: Room for the form's other fields and the multipart boundaries around the file.
FORM_ALLOWANCE_BYTES = 64 * 1024


def describe_bytes(size: int) -> str:
    """'10,485,760 bytes (10.0 MiB)': exact, with a unit a person reads at a glance."""
    if size >= 1024 * 1024:
        return f"{size:,} bytes ({size / (1024 * 1024):.1f} MiB)"
    if size >= 1024:
        return f"{size:,} bytes ({size / 1024:.1f} KiB)"
    return f"{size:,} bytes"


def upload_refusal(request: HttpRequest) -> str | None:
    """Why the upload handler refused this request's file, or None."""
    return getattr(request, "_qualifier_upload_refused", None)


class UploadLimitHandler(FileUploadHandler):
    """Stops a file upload at QUALIFIER_MAX_UPLOAD_BYTES (see the module's docstring)."""

    def handle_raw_input(
        self,
        input_data: Any,
        META: Any,
        content_length: int,
        boundary: Any,
        encoding: str | None = None,
    ) -> None:
        self.limit = conf.QUALIFIER_MAX_UPLOAD_BYTES
        self.declared = content_length
        return None  # the parsing itself is Django's

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        if self.declared > self.limit + FORM_ALLOWANCE_BYTES:
            self._refuse(
                f"The upload is {describe_bytes(self.declared)}; the limit for the file is "
                f"{describe_bytes(self.limit)}."
            )
            raise StopUpload(connection_reset=True)  # the rest is never read

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > self.limit:
            self._refuse(f"The file is larger than the limit of {describe_bytes(self.limit)}.")
            # What remains is at most FORM_ALLOWANCE_BYTES: read and drop it, so the client
            # hears the answer instead of a reset connection.
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler stores the file

    def _refuse(self, message: str) -> None:
        if self.request is not None:
            self.request._qualifier_upload_refused = f"{message} Split it into smaller files."
