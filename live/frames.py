"""The frames a live source sends: valid JPEG images of an exact byte size (a base image at the largest quality that
fits, padded with comment segments), and a frame cut short for the bad-frame test."""

from __future__ import annotations

import io

_COM_MAX = 65535 - 2


class JpegSizer:
    """Returns JPEG frames of an exact size: a base image encoded at the largest quality that fits,
    padded with COM (comment) segments up to the byte count; frames are cached per size."""

    def __init__(self) -> None:
        from PIL import Image
        from skimage import data

        self._bases: list[bytes] = []
        img = Image.fromarray(data.astronaut())
        for side in (160, 320, 512):
            small = img.resize((side, side))
            for quality in (30, 50, 70, 85, 95):
                buf = io.BytesIO()
                small.save(buf, format="JPEG", quality=quality)
                self._bases.append(buf.getvalue())
        self._bases.sort(key=len)
        self._cache: dict[int, bytes] = {}

    @property
    def min_bytes(self) -> int:
        return len(self._bases[0])

    def frame(self, nbytes: int) -> bytes:
        """Returns a valid JPEG of exactly `nbytes` bytes (or the smallest base if that is larger)."""
        if nbytes not in self._cache:
            base = max((b for b in self._bases if len(b) <= nbytes), key=len, default=self._bases[0])
            self._cache[nbytes] = pad_jpeg(base, nbytes)
        return self._cache[nbytes]


def pad_jpeg(jpeg: bytes, nbytes: int) -> bytes:
    """Returns the JPEG with COM segments inserted after SOI so that it is `nbytes` long (if it can grow)."""
    missing = nbytes - len(jpeg)
    segments = []
    while missing >= 4:
        length = min(missing - 2, _COM_MAX + 2)  # the length field counts itself, not the marker
        if 0 < missing - 2 - length < 2:  # leave no remainder too small for another segment
            length -= 4
        segments.append(b"\xff\xfe" + length.to_bytes(2, "big") + b"\x00" * (length - 2))
        missing -= length + 2
    return jpeg[:2] + b"".join(segments) + jpeg[2:] + b"\x00" * max(0, missing)


def corrupt(jpeg: bytes) -> bytes:
    """Returns the frame cut short (no EOI marker, truncated scan): a worker answers 400 bad-frame."""
    return jpeg[: len(jpeg) // 2]
