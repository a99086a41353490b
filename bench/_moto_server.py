"""moto's server for the benchmarks, reading only the bytes a ranged GET asks for.

moto answers ``GET`` with ``Range`` by reading the whole object and slicing it: a job over a 1 GB
input, whose every chunk is one ranged GET of its input, would have moto read 1 GB per chunk — a
cost of the stand-in that S3 does not have, and that would be measured as the portal's. Here,
while moto builds a ranged GET's answer, the object's value is a view that reads just the slice
asked for. Everything else is moto as it is.

    python -m bench._moto_server -H 127.0.0.1 -p PORT      # the arguments of moto_server
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from moto.s3.models import FakeKey
from moto.s3.responses import S3Response
from moto.server import main

_ranged = threading.local()
_whole_value = FakeKey.value


class _Slices:
    """An object's bytes as ``len()`` and slices, read from its buffer only when sliced."""

    def __init__(self, key: FakeKey) -> None:
        self._key = key

    def __len__(self) -> int:
        return self._key.contentsize

    def __getitem__(self, part: slice) -> bytes:
        start, stop, _ = part.indices(len(self))
        with self._key.lock:
            self._key._value_buffer.seek(start)
            return self._key._value_buffer.read(max(stop - start, 0))


def _value(key: FakeKey) -> Any:
    if getattr(_ranged, "active", False):
        return _Slices(key)
    return _whole_value.fget(key)


_get_object = S3Response.get_object


def _get_object_ranged(self: S3Response) -> Any:
    # Only the answer's body is built in get_object: the view cannot reach any other use.
    _ranged.active = bool(self.headers.get("range"))
    try:
        return _get_object(self)
    finally:
        _ranged.active = False


_handle_range_header = S3Response._handle_range_header


def _handle_range_header_whole(self: S3Response, *args: Any) -> Any:
    # A range moto treats as none (several ranges, one it cannot parse) answers the whole object.
    status, headers, body = _handle_range_header(self, *args)
    return status, headers, body[0 : len(body)] if isinstance(body, _Slices) else body


FakeKey.value = property(_value, _whole_value.fset)
S3Response.get_object = _get_object_ranged
S3Response._handle_range_header = _handle_range_header_whole

if __name__ == "__main__":
    main(sys.argv[1:])
