"""A fast GGUF header reader: metadata, tensor infos, and tensors through gguf's dequantizer.

`gguf.GGUFReader` decodes every metadata array element by element (9 s for the
49k-token SmolLM2 vocabulary, ~25 s for Gemma 3's 262k on this machine);
`read_header` reads the architecture and each tensor's name/shape/type/offset and
skips metadata values, and `read_metadata` decodes every value with numeric
arrays read in one piece. Layout (GGUF v2/v3, little endian):
magic, u32 version, u64 n_tensors, u64 n_kv, n_kv × (string key, u32 type,
value), n_tensors × (string name, u32 n_dims, u64 dims[n_dims] (fastest first),
u32 ggml type, u64 offset), padding to `general.alignment` (default 32), data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf.quants import dequantize as ref_dequantize

# GGUF metadata value types -> fixed byte size (8 = string, 9 = array are variable)
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (slowest first), e.g. (rows, cols)
    type_name: str  # ggml type, e.g. "Q4_1"
    type_id: int
    offset: int  # absolute byte offset in the file

    def rows(self, path: str | Path, n: int | None = None) -> np.ndarray:
        """Raw bytes of the first `n` rows (None: all): uint8 [n, bytes_per_row] (1-D tensors: all of it)."""
        qt = gguf.GGMLQuantizationType(self.type_id)
        block, nbytes = gguf.GGML_QUANT_SIZES[qt]
        cols = self.shape[-1]
        if cols % block:
            raise ValueError(f"tensor {self.name}: row length {cols} is not a multiple of the {self.type_name} block {block}")
        row_bytes = cols // block * nbytes
        total = int(np.prod(self.shape[:-1])) if len(self.shape) > 1 else 1
        nrows = total if n is None else min(n, total)
        mm = np.memmap(path, dtype=np.uint8, mode="r", offset=self.offset, shape=(nrows * row_bytes,))
        return np.array(mm).reshape(nrows, row_bytes)

    def dequantize(self, path: str | Path) -> np.ndarray:
        """The whole tensor as float32 in numpy order, decoded by gguf's reference dequantizer."""
        out = ref_dequantize(self.rows(path), gguf.GGMLQuantizationType(self.type_id))
        return np.ascontiguousarray(out, dtype=np.float32).reshape(self.shape)


class _Buf:
    def __init__(self, data: memoryview):
        self.d, self.p = data, 0

    def take(self, fmt: str):
        v = struct.unpack_from("<" + fmt, self.d, self.p)
        self.p += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def string(self) -> str:
        n = self.take("Q")
        s = bytes(self.d[self.p:self.p + n]).decode("utf-8", "replace")
        self.p += n
        return s

    def value(self, vtype: int):
        """Decode one value: numbers as Python scalars, numeric arrays as numpy, strings as str."""
        if vtype in _FIXED:
            v = np.frombuffer(self.d, dtype=_NP[vtype], count=1, offset=self.p)[0].item()
            self.p += _FIXED[vtype]
            return v
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, count = self.take("I"), self.take("Q")
            if etype in _FIXED:
                arr = np.frombuffer(self.d, dtype=_NP[etype], count=count, offset=self.p).copy()
                self.p += _FIXED[etype] * count
                return arr
            return [self.value(etype) for _ in range(count)]
        raise ValueError(f"unknown metadata value type {vtype}")

    def skip_value(self, vtype: int) -> None:
        if vtype in _FIXED:
            self.p += _FIXED[vtype]
        elif vtype == 8:
            n = self.take("Q")  # (not `self.p += self.take(...)`: that reads p before take moves it)
            self.p += n
        elif vtype == 9:
            etype, count = self.take("I"), self.take("Q")
            if etype in _FIXED:
                self.p += _FIXED[etype] * count
            else:
                for _ in range(count):
                    self.skip_value(etype)
        else:
            raise ValueError(f"unknown metadata value type {vtype}")


def read_header(path: str | Path, metadata: bool = False) -> tuple[dict, list[TensorInfo]]:
    """Return (metadata, [TensorInfo]).

    metadata=False: only {'general.architecture': str|None, 'general.alignment': int}; True: every key
    (numbers as Python scalars, numeric arrays as numpy arrays, string arrays as lists of str).
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = np.memmap(f, dtype=np.uint8, mode="r")
        b = _Buf(memoryview(data))
        if bytes(b.d[:4]) != b"GGUF":
            raise ValueError("bad magic")
        b.p = 4
        version, n_tensors, n_kv = b.take("I"), b.take("Q"), b.take("Q")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} (supported: 2, 3)")
        meta = {"general.architecture": None, "general.alignment": 32}
        for _ in range(n_kv):
            key, vtype = b.string(), b.take("I")
            if metadata:
                meta[key] = b.value(vtype)
            elif key == "general.architecture" and vtype == 8:
                meta[key] = b.string()
            elif key == "general.alignment" and vtype in (4, 5):
                meta[key] = b.take("I")
            else:
                b.skip_value(vtype)
        raw = []
        for _ in range(n_tensors):
            name, nd = b.string(), b.take("I")
            dims = [b.take("Q") for _ in range(nd)]
            raw.append((name, tuple(reversed(dims)), b.take("I"), b.take("Q")))
        align = int(meta["general.alignment"])
        start = (b.p + align - 1) // align * align
        if start > len(data) and n_tensors:
            raise ValueError("truncated before the tensor data")
        size = len(data)
    infos = []
    for name, shape, tid, off in raw:
        try:
            qt = gguf.GGMLQuantizationType(tid)
            tname = qt.name
            block, nbytes = gguf.GGML_QUANT_SIZES[qt]
            end = start + off + int(np.prod(shape)) // block * nbytes
        except (ValueError, KeyError):
            tname, end = f"type{tid}", start + off
        if end > size:
            raise ValueError(f"tensor {name} ends at byte {end:,} but the file has {size:,} (truncated)")
        infos.append(TensorInfo(name, shape, tname, tid, start + off))
    return meta, infos
