"""How a job's uploaded file is received, by the upload form and by ``POST /api/v1/jobs/`` alike.

Django's default handlers spool a whole upload to disk before the view sees its size: a file far
over the jobs' limit would fill the disk before its 413. :func:`job_upload_handlers` receives only
the ``file`` part, and at most the limit of it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import (
    FileUploadHandler,
    MemoryFileUploadHandler,
    SkipFile,
    TemporaryFileUploadHandler,
)
from django.http import HttpRequest


class JobUploadHandler(TemporaryFileUploadHandler):
    """Spools the form's one ``file`` part to a temporary file, at most the jobs' size limit of it.

    Past the limit the bytes are counted but not written: the file keeps its true size, so
    ``job_submit`` refuses it (413, audited) without the disk filling up first. Any other file
    part, or a second ``file``, is skipped unread.
    """

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self._file_seen = False
        self._written = 0

    def new_file(self, field_name: str, *args: Any, **kwargs: Any) -> None:
        """Start the ``file`` part; skip any other."""
        if field_name != "file" or self._file_seen:
            # Django closes every handler's ``file`` when a part is skipped: let go of the
            # finished upload first, or it would be closed before the view reads it.
            self.__dict__.pop("file", None)
            raise SkipFile()
        self._file_seen = True
        self._written = 0
        super().new_file(field_name, *args, **kwargs)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        """Write what fits under the limit (one byte more, so "over" stays visible)."""
        room = settings.JOBS_MAX_INPUT_BYTES + 1 - self._written
        if room > 0:
            piece = raw_data[:room]
            self.file.write(piece)
            self._written += len(piece)


def job_upload_handlers(request: HttpRequest) -> list[FileUploadHandler]:
    """The handlers for a job submission; set them before anything reads the request's body."""
    return [MemoryFileUploadHandler(request), JobUploadHandler(request)]
