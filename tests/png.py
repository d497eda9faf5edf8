"""Read a PNG's pixels with the standard library (zlib + struct): 8-bit RGB or RGBA,
not interlaced, which is what Chromium's screenshots are. No Pillow in the venv."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path


@dataclass
class Image:
    width: int
    height: int
    channels: int
    rows: list[bytes]

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        i = x * self.channels
        return tuple(self.rows[y][i:i + 3])

    def region(self, x0: int, y0: int, x1: int, y1: int) -> set[tuple[int, int, int]]:
        """The colours in [x0, x1) x [y0, y1), clipped to the image."""
        out = set()
        c = self.channels
        for y in range(max(0, y0), min(self.height, y1)):
            row = self.rows[y]
            for x in range(max(0, x0), min(self.width, x1)):
                out.add(tuple(row[x * c:x * c + 3]))
        return out

    def mean_luminance(self) -> float:
        """Mean relative luminance (0 black .. 1 white), Rec. 709 weights on the raw values."""
        c, total = self.channels, 0.0
        for row in self.rows:
            total += 0.2126 * sum(row[0::c]) + 0.7152 * sum(row[1::c]) + 0.0722 * sum(row[2::c])
        return total / (255 * self.width * self.height)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def read_png(path: Path) -> Image:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and not interlace, (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    prev, rows = bytes(stride), []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], raw[start + 1:start + 1 + stride]
        if kind == 0:
            cur = bytes(line)
        elif kind == 1:  # Sub: a running sum per channel
            out = bytearray(line)
            for ch in range(channels):
                out[ch::channels] = bytes(v & 255 for v in accumulate(line[ch::channels]))
            cur = bytes(out)
        elif kind == 2:  # Up
            cur = bytes((a + b) & 255 for a, b in zip(line, prev))
        else:  # Average (3) or Paeth (4): byte by byte
            out = bytearray(stride)
            for i in range(stride):
                left = out[i - channels] if i >= channels else 0
                if kind == 3:
                    out[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
                else:
                    corner = prev[i - channels] if i >= channels else 0
                    out[i] = (line[i] + _paeth(left, prev[i], corner)) & 255
            cur = bytes(out)
        rows.append(cur)
        prev = cur
    return Image(width, height, channels, rows)
