"""Request errors the server answers with a JSON body and an HTTP status.

Each is a :class:`~tympan.errors.TympanError` carrying its status code, so the
app needs one handler; the message names the upload and what to do.
"""

from __future__ import annotations

from tympan.errors import TympanError


class RequestError(TympanError):
    """A request the server cannot serve; ``status_code`` is the HTTP answer."""

    status_code = 400
    kind = "bad_request"


class MalformedRequest(RequestError):
    """The body is not what its Content-Type says (e.g. multipart without a file part)."""

    status_code = 400
    kind = "malformed_request"


class UploadTimeout(RequestError):
    """The body did not arrive within the upload time limit."""

    status_code = 408
    kind = "upload_timeout"


class UploadTooLarge(RequestError):
    """The body, or the audio it decodes to, is over the server's limit."""

    status_code = 413
    kind = "too_large"


class UnsupportedAudio(RequestError):
    """The body is not audio the server can decode."""

    status_code = 415
    kind = "unsupported_audio"


class AudioTooShort(RequestError):
    """The audio decodes but is too short to classify."""

    status_code = 422
    kind = "audio_too_short"
