"""Receive a request body into a spooled temporary file, counting bytes as they arrive.

A body is either a raw ``audio/*`` (or ``application/octet-stream``) upload or
``multipart/form-data`` with one file part. The byte cap is checked against
``Content-Length`` before anything is read, and again on every chunk while
streaming, so an oversized body is refused after at most one chunk past the
cap; the upload as a whole must arrive within a time limit.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import IO

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from tympan.serve.errors import MalformedRequest, UnsupportedAudio, UploadTimeout, UploadTooLarge

#: Bytes of an upload kept in memory before it spills to a temporary file.
SPOOL_BYTES = 1 << 20

RAW_TYPES = ("audio/", "video/webm", "video/mp4", "video/ogg", "application/octet-stream")


@dataclass
class Upload:
    """An uploaded body as a seekable file, its client-given name (a label only) and size."""

    file: IO[bytes]
    name: str
    size_bytes: int

    def close(self) -> None:
        self.file.close()


@dataclass(frozen=True)
class UploadLimits:
    """``max_bytes``: body cap; ``timeout_seconds``: time allowed for the whole body."""

    max_bytes: int
    timeout_seconds: float


def _too_large(limits: UploadLimits) -> UploadTooLarge:
    return UploadTooLarge(f"upload over the server's {limits.max_bytes / 1e6:g} MB limit; send a "
                          "shorter recording (or start the server with a larger --max-upload-mb)")


async def _limited(request: Request, limits: UploadLimits) -> AsyncGenerator[bytes, None]:
    """The body's chunks; raises UploadTooLarge past the cap, UploadTimeout past the deadline."""
    deadline = time.monotonic() + limits.timeout_seconds
    total = 0
    chunks = request.stream().__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(chunks.__anext__(), remaining)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise UploadTimeout(f"upload not complete after {limits.timeout_seconds:g} s; "
                                "send the body faster or in one piece") from None
        total += len(chunk)
        if total > limits.max_bytes:
            raise _too_large(limits)
        if chunk:
            yield chunk


async def receive_upload(request: Request, limits: UploadLimits) -> Upload:
    """Stream the request's audio into a temporary file (memory up to :data:`SPOOL_BYTES`).

    Raises:
        UploadTooLarge: ``Content-Length`` or the bytes received exceed ``limits.max_bytes``.
        UploadTimeout: the body took longer than ``limits.timeout_seconds``.
        MalformedRequest: an empty body, a bad Content-Length, or multipart without a file part.
        UnsupportedAudio: a Content-Type that is neither audio nor multipart.
    """
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise MalformedRequest(f"Content-Length {length!r} is not a byte count")
        if int(length) > limits.max_bytes:
            raise _too_large(limits)
    content_type = request.headers.get("content-type", "application/octet-stream").lower()
    if content_type.startswith("multipart/form-data"):
        return await _receive_multipart(request, limits)
    if not content_type.startswith(RAW_TYPES):
        raise UnsupportedAudio(f"Content-Type {content_type!r} is not audio; send the recording "
                               "as an audio/* body or as a multipart file field named 'file'")
    # closed by Upload.close() once decoded, or here on failure
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    size = 0
    try:
        async for chunk in _limited(request, limits):
            spool.write(chunk)
            size += len(chunk)
    except BaseException:
        spool.close()
        raise
    if size == 0:
        spool.close()
        raise MalformedRequest("empty body: send the audio bytes (or a multipart file field "
                               "named 'file')")
    spool.seek(0)
    return Upload(spool, "upload", size)  # type: ignore[arg-type]


async def _receive_multipart(request: Request, limits: UploadLimits) -> Upload:
    parser = MultiPartParser(request.headers, _limited(request, limits), max_files=1,
                             max_fields=16, max_part_size=64 * 1024)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise MalformedRequest(f"malformed multipart body ({exc.message}); send one file "
                               "field named 'file'") from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        await form.close()
        raise MalformedRequest("multipart body has no file part; send the audio as a file "
                               "field named 'file'")
    upload = files[0]
    upload.file.seek(0, 2)
    size = upload.file.tell()
    upload.file.seek(0)
    if size == 0:
        await form.close()
        raise MalformedRequest(f"{_label(upload.filename)}: the file part is empty")
    return Upload(upload.file, _label(upload.filename), size)


def _label(filename: str | None) -> str:
    """The client's filename, reduced to a display label (never used as a path)."""
    if not filename:
        return "upload"
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(ch for ch in base if ch.isprintable())[:120]
    return printable or "upload"
