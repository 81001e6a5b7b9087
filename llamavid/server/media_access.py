"""Which media a server may read: files inside its media roots, and images sent inline as ``data:`` URLs.

The rules (``llamavid serve``'s security model, docs/SERVE.md):

* A reference is ``file://`` + an absolute path, an absolute path, or a path relative to a media root
  (tried against each root in order). Its **real** path (every symlink and ``..`` resolved) must lie
  inside a root's real path; a link inside a root that points outside it is refused like ``../x``.
* Without media roots no file is readable at all.
* ``http(s)://`` and every other scheme are refused: the server never fetches anything.
* ``data:`` URLs carry images (``image/png``, ``jpeg``, ``webp``, ``bmp``; in ``image_url`` parts) or videos
  (``video/mp4``, ``webm``, ``quicktime``, ``x-matroska``...; in ``video_url`` parts), base64-encoded, at most
  ``max_image_bytes`` / ``max_video_bytes`` once decoded; the size is checked before decoding. An image's
  header is read at once: one that declares more than ``MAX_IMAGE_PIXELS`` pixels is refused (413) before
  any pixel is decoded, one Pillow cannot read is refused (400). The bytes become a file only while the
  server prepares and encodes them (``llamavid.server.service``).
* A reference must be valid UTF-8 text (a lone surrogate, from a JSON escape, is refused).
* Refusals are ``RequestError``s that name the reference as the client wrote it (never the resolved path
  on the server): 403 outside the roots, 404 missing inside them, 413 too large, 400 anything else.
  Whether a file outside the roots exists is never revealed.

What a client may read is then exactly what ``open_input`` accepts (videos, images, ``.vidtok`` files).
Media roots should not be writable by whoever sends requests: a path is checked, then opened by its real
path, and someone who can swap a checked directory for a link between the two could escape.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..core.errors import InputError, OptionError, RequestError, VideoError
from ..media.video import MAX_IMAGE_PIXELS, ImageTooLargeError, open_image

DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_VIDEO_BYTES = 10 * 1024 * 1024

# The types a data: URL may carry, and the file suffix open_input recognises each by.
DATA_IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp",
                    "image/bmp": ".bmp"}
DATA_VIDEO_TYPES = {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov",
                    "video/x-matroska": ".mkv", "video/x-msvideo": ".avi", "video/mpeg": ".mpg", "video/mp2t": ".ts",
                    "video/x-m4v": ".m4v", "video/3gpp": ".3gp", "video/x-flv": ".flv", "video/x-ms-wmv": ".wmv"}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass(frozen=True)
class MediaSource:
    """A media reference that passed the rules: a file inside a root, or an inline image's bytes.

    ``key`` identifies the content for sharing work: the same file (device, inode, size, modification
    time) or the same inline bytes (SHA-256) give the same key, a changed file a new one.
    """

    key: tuple
    shown: str  # the reference as the client wrote it (shortened for data: URLs), for messages
    path: Path | None = None  # real path of a file inside a media root
    data: bytes | None = field(default=None, repr=False)  # an inline image
    suffix: str = ""  # the inline image's file suffix (.png...)


class MediaAccess:
    """The media roots of a server and the size limit of inline images."""

    def __init__(self, roots: Sequence[str | os.PathLike] = (), *, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
                 max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES):
        resolved = []
        for root in roots:
            path = Path(root).expanduser()
            if not path.is_dir():
                raise OptionError("media_root", os.fspath(root),
                                  "no such folder" if not path.exists() else "not a folder")
            resolved.append(Path(os.path.realpath(path)))
        self.roots: tuple[Path, ...] = tuple(resolved)
        for what, limit in (("image", max_image_bytes), ("video", max_video_bytes)):
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise InputError(f"the inline {what} limit must be a positive number of bytes, not {limit!r}")
        self.max_image_bytes, self.max_video_bytes = max_image_bytes, max_video_bytes

    # -- references --------------------------------------------------------------------------------------------
    def resolve(self, url: object, *, param: str, kind: str = "image") -> MediaSource:
        """A content part's URL -> a ``MediaSource``, or a ``RequestError`` naming ``param``. ``kind``: what a
        ``data:`` URL must carry ("image" for image_url parts, "video" for video_url parts)."""
        if not isinstance(url, str) or not url.strip():
            raise RequestError(f"{param} must be a non-empty string", param=param)
        _check_utf8(url, param)
        match = _SCHEME.match(url)
        scheme = match.group(1).lower() if match else None
        if scheme in ("http", "https"):
            raise RequestError(f"{param}: {_short(url)}: this server does not fetch URLs; put the file under a "
                               "media root and pass its path (or send an image as a data: URL)",
                               param=param, code="unsupported_url")
        if scheme == "data":
            return self._data(url, param, kind)
        if scheme == "file":
            parts = urllib.parse.urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise RequestError(f"{param}: {_short(url)}: file:// URLs must name a file on this machine "
                                   "(file:///absolute/path)", param=param, code="unsupported_url")
            path = urllib.parse.unquote(parts.path)
            if not path.startswith("/"):
                raise RequestError(f"{param}: {_short(url)}: a file:// URL needs an absolute path", param=param,
                                   code="unsupported_url")
            return self.file(path, param=param, shown=url)
        if scheme is not None and len(scheme) > 1:  # (one letter: a Windows drive, treated as a path)
            raise RequestError(f"{param}: {_short(url)}: unsupported URL scheme {scheme}: (use file://, a path "
                               "under a media root, or a data: URL for an image)", param=param, code="unsupported_url")
        return self.file(url, param=param, shown=url)

    def file(self, reference: str, *, param: str, shown: str | None = None) -> MediaSource:
        """A path (absolute, or relative to a media root) -> a ``MediaSource`` for the file it names."""
        shown = shown if shown is not None else reference
        _check_utf8(reference, param)
        if "\x00" in reference:
            raise RequestError(f"{param}: the path contains a NUL character", param=param)
        if not self.roots:
            raise RequestError(f"{param}: {_short(shown)}: this server reads no files (it was started without "
                               "--media-root); send images as data: URLs", status=403, param=param,
                               code="media_access_denied")
        inside = self.locate(reference)
        if inside is None:
            raise RequestError(f"{param}: {_short(shown)}: outside the server's media roots", status=403, param=param,
                               code="media_access_denied")
        try:
            st = inside.stat()
        except FileNotFoundError:
            raise RequestError(f"{param}: {_short(shown)}: no such file under the media roots", status=404,
                               param=param, code="media_not_found") from None
        except OSError as exc:
            raise RequestError(f"{param}: {_short(shown)}: cannot be read ({exc.strerror})", status=403, param=param,
                               code="media_access_denied") from None
        if not inside.is_file():
            raise RequestError(f"{param}: {_short(shown)}: not a file", param=param)
        if not os.access(inside, os.R_OK):
            raise RequestError(f"{param}: {_short(shown)}: cannot be read (permission denied)", status=403,
                               param=param, code="media_access_denied")
        return MediaSource(("file", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), shown, path=inside)

    def library_entry(self, reference: object, *, param: str) -> tuple[Path, bool]:
        """A search's path (absolute, or relative to a media root): a file (as ``file`` checks it) or a folder
        inside a root -> (its real path, whether it is a folder). A folder's files are checked one by one by
        whoever lists them (``locate``): a link inside it that points out of the roots is not followed."""
        if not isinstance(reference, str) or not reference.strip():
            raise RequestError(f"{param} must be a non-empty string", param=param)
        _check_utf8(reference, param)
        if "\x00" in reference:
            raise RequestError(f"{param}: the path contains a NUL character", param=param)
        if self.roots:
            inside = self.locate(reference)
            if inside is not None and inside.is_dir():
                if not os.access(inside, os.R_OK | os.X_OK):
                    raise RequestError(f"{param}: {_short(reference)}: cannot be read (permission denied)",
                                       status=403, param=param, code="media_access_denied")
                return inside, True
        found = self.file(reference, param=param)
        assert found.path is not None
        return found.path, False

    def locate(self, reference: str) -> Path | None:
        """The real path ``reference`` names if it lies inside a media root (existing or not), else None.

        A relative reference is tried against each root in order; the first root under which it exists
        wins, else the first under which it stays inside (so that a missing file is "not found", not
        "outside").
        """
        path = Path(reference)  # "~" is not expanded: it would name the server's home, not the client's
        if path.is_absolute():
            real = Path(os.path.realpath(path))
            return real if any(_within(real, root) for root in self.roots) else None
        candidates = []
        for root in self.roots:
            real = Path(os.path.realpath(root / path))
            if _within(real, root):
                if real.exists():
                    return real
                candidates.append(real)
        return candidates[0] if candidates else None

    # -- inline images ---------------------------------------------------------------------------------------------
    def _data(self, url: str, param: str, kind: str) -> MediaSource:
        header, comma, payload = url.partition(",")
        if not comma:
            raise RequestError(f"{param}: a data: URL needs a comma before its data", param=param)
        meta = [p.strip().lower() for p in header[len("data:"):].split(";")]
        mime, is_base64 = meta[0], "base64" in meta[1:]
        types = DATA_VIDEO_TYPES if kind == "video" else DATA_IMAGE_TYPES
        limit = self.max_video_bytes if kind == "video" else self.max_image_bytes
        suffix = types.get(mime)
        if suffix is None:
            other = "an image_url" if kind == "video" else "a video_url"
            hint = f"; send it as {other} part" if mime in (DATA_IMAGE_TYPES if kind == "video" else DATA_VIDEO_TYPES) \
                else ""
            raise RequestError(f"{param}: data: URL of type {_short(mime, 60) or '(none)'}; a {kind}_url accepts "
                               f"{', '.join(sorted(set(types) - {'image/jpg'}))}{hint}", param=param,
                               code="unsupported_media_type")
        if not is_base64:
            raise RequestError(f"{param}: a data: URL must be base64-encoded (data:{mime};base64,...)", param=param)
        too_large = RequestError(f"{param}: the {kind} is larger than this server's limit of {limit:,} bytes",
                                 status=413, param=param, code=f"{kind}_too_large")
        payload = "".join(payload.split())  # base64 may be wrapped over lines
        if len(payload) // 4 * 3 > limit + 2:  # checked before decoding anything
            raise too_large
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"{param}: the data: URL is not valid base64", param=param) from None
        if not data:
            raise RequestError(f"{param}: the data: URL holds no data", param=param)
        if len(data) > limit:
            raise too_large
        if kind == "image":
            _check_image(data, param)
        digest = hashlib.sha256(data).hexdigest()
        return MediaSource(("data", digest), f"data:{mime};base64,... ({len(data):,} bytes)", data=data, suffix=suffix)


def _check_image(data: bytes, param: str) -> None:
    """An inline image's header, read before anything is decoded: its type and its pixel count."""
    import io

    try:
        with open_image(io.BytesIO(data), param, what="read"):
            return
    except ImageTooLargeError:
        raise RequestError(f"{param}: the image declares more pixels than this server's limit of "
                           f"{MAX_IMAGE_PIXELS:,}", status=413, param=param, code="image_too_large") from None
    except VideoError as exc:
        raise RequestError(exc.render(), param=param, code="invalid_media") from None


def _check_utf8(text: str, param: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{param}: the reference is not valid UTF-8 text (it holds a lone surrogate)",
                           param=param) from None


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
