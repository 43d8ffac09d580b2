"""The CSV text of per-query records, formatted column by column into one byte buffer (numba for large batches).

Integers in decimal; times rounded to the microsecond, written with one to three decimals (trailing zeros
dropped, so `12.5`, `12.0`); a missing time (NaN) or string (code -1) as an empty field; strings as their
labels' bytes, quoted once per label when they need it. Small batches (a live source's flush) are formatted
by Python's string formatting with the same arithmetic, so the bytes never depend on which ran (a test checks).
"""

from __future__ import annotations

import numpy as np

INT, FLOAT, STRING = 0, 1, 2
"""Column kinds of a row layout."""
JIT_ROWS = 2000
"""The first batch of at least this many rows compiles the formatter (numba, imported then), which then formats
every batch; before that, batches run as Python."""
MAX_ABS_MS = 9.0e12
"""Largest time a field can hold (about 285 years in ms): its microseconds fit an int64 with room."""
_INT_WIDTH = 20
_FLOAT_WIDTH = 18  # sign, 13 integer digits, the point, 3 decimals

_jitted = None


def csv_label(label: str) -> bytes:
    """Returns a label as one CSV field: quoted (quotes doubled) when it holds a comma, quote or line break."""
    if any(c in label for c in ',"\r\n'):
        label = '"' + label.replace('"', '""') + '"'
    return label.encode()


def format_rows(kinds: np.ndarray, index: np.ndarray, base: np.ndarray, ints: np.ndarray, floats: np.ndarray,
                codes: np.ndarray, rows: np.ndarray, label_start: np.ndarray, label_bytes: np.ndarray, max_label: int,
                compiled: bool | None = None) -> np.ndarray:
    """Returns the CSV lines of a batch as bytes (uint8), line i from the values at rows[i]. Column c is
    ints[index[c]], floats[index[c]] or the labels codes[index[c]] point to (code k >= 0 is label base[index[c]]
    + k; label i is label_bytes[label_start[i]:label_start[i + 1]]), by kinds[c]. `compiled`: run it compiled
    (None: once JIT_ROWS or more rows come, or compiled already). Raises ValueError on a time that is infinite or
    beyond MAX_ABS_MS."""
    n = len(rows)
    width = 0
    for c in range(len(kinds)):
        width += 1 + (_INT_WIDTH if kinds[c] == INT else _FLOAT_WIDTH if kinds[c] == FLOAT else max_label)
    if compiled is None:
        compiled = n >= JIT_ROWS or _jitted is not None
    if not compiled:
        return _format_small(kinds, index, base, ints[:, rows], floats[:, rows], codes[:, rows], label_start,
                             label_bytes)
    out = np.empty(n * width, dtype=np.uint8)
    end = _compiled()(kinds, index, base, ints, floats, codes, rows, label_start, label_bytes, out)
    if end < 0:
        raise _bad_time(-end - 1)
    return out[:end]


def _bad_time(row: int) -> ValueError:
    return ValueError(f"record {row} of the batch: a time is infinite or beyond {MAX_ABS_MS:g} ms")


def _format_small(kinds: np.ndarray, index: np.ndarray, base: np.ndarray, ints: np.ndarray, floats: np.ndarray,
                  codes: np.ndarray, label_start: np.ndarray, label_bytes: np.ndarray) -> np.ndarray:
    """Returns what the compiled formatter returns, with Python's string formatting: quick for a few rows (a live
    source's flush) without importing numba. The same arithmetic (rint of |x| * 1000), so the same bytes."""
    labels = [label_bytes[label_start[i]:label_start[i + 1]].tobytes().decode() for i in range(len(label_start) - 1)]
    columns: list[list[str]] = []
    for c, kind in enumerate(kinds.tolist()):
        j = int(index[c])
        if kind == INT:
            columns.append([str(v) for v in ints[j].tolist()])
        elif kind == FLOAT:
            x = floats[j]
            bad = np.flatnonzero(~(np.abs(x) <= MAX_ABS_MS) & ~np.isnan(x))
            if len(bad):
                raise _bad_time(int(bad[0]))
            q = np.rint(np.abs(x) * 1000.0)
            columns.append(["" if xi != xi else "-" * (xi < 0 and qi > 0) + f"{int(qi) // 1000}."
                            + (f"{int(qi) % 1000:03d}".rstrip("0") or "0")
                            for xi, qi in zip(x.tolist(), q.tolist(), strict=True)])
        else:
            columns.append([labels[k + int(base[j])] if k >= 0 else "" for k in codes[j].tolist()])
    text = "".join(",".join(row) + "\n" for row in zip(*columns, strict=True))
    return np.frombuffer(text.encode(), dtype=np.uint8)


def _compiled():  # noqa: ANN202 (numba's dispatcher)
    """Returns the row formatter compiled by numba (cached on disk like the simulator's batching)."""
    global _jitted, _digits
    if _jitted is None:
        from numba import njit

        # _format calls _digits by its global name: compiled, it must find the compiled one there.
        _digits = njit(cache=True, nogil=True)(_digits)
        _jitted = njit(cache=True, nogil=True)(_format)  # nogil: the writer's thread formats while the caller runs
    return _jitted


def _digits(out: np.ndarray, p: int, v: int, width: int) -> int:
    """Writes the decimal digits of v >= 0 at out[p:], zero-padded to `width` digits; returns the next position."""
    n = 1
    t = v
    while t >= 10:  # divisions by the constant 10: multiplications once compiled
        t //= 10
        n += 1
    n = max(n, width)
    for i in range(n):
        out[p + n - 1 - i] = 48 + v % 10
        v //= 10
    return p + n


def _format(kinds: np.ndarray, index: np.ndarray, base: np.ndarray, ints: np.ndarray, floats: np.ndarray,
            codes: np.ndarray, rows: np.ndarray, label_start: np.ndarray, label_bytes: np.ndarray,
            out: np.ndarray) -> int:
    """Fills `out` with the rows; returns the bytes written, or -(line + 1) at a time it cannot write."""
    p = 0
    for i in range(len(rows)):
        r = rows[i]
        for c in range(len(kinds)):
            if c:
                out[p] = 44  # ,
                p += 1
            j = index[c]
            if kinds[c] == INT:
                v = ints[j, r]
                if v < 0:
                    out[p] = 45  # -
                    p += 1
                    v = -v
                p = _digits(out, p, v, 1)
            elif kinds[c] == FLOAT:
                x = floats[j, r]
                if x != x:
                    continue  # NaN: missing
                a = abs(x)
                if not a <= MAX_ABS_MS:
                    return -(i + 1)
                q = np.int64(np.rint(a * 1000.0))
                if x < 0 and q > 0:
                    out[p] = 45
                    p += 1
                p = _digits(out, p, q // 1000, 1)
                frac = q % 1000
                out[p] = 46  # . (always: a reader guessing types then sees a float even in a whole number)
                p += 1
                w = 3
                while frac % 10 == 0 and w > 1:
                    frac //= 10
                    w -= 1
                p = _digits(out, p, frac, w)
            else:
                k = codes[j, r]
                if k >= 0:
                    k += base[j]
                    for b in range(label_start[k], label_start[k + 1]):
                        out[p] = label_bytes[b]
                        p += 1
        out[p] = 10  # \n
        p += 1
    return p
