"""A fast GGUF header reader: architecture and tensor infos without decoding the vocabulary.

`gguf.GGUFReader` decodes every metadata array element by element (9 s for the
49k-token SmolLM2 vocabulary on this machine); the loader only needs the
architecture, each tensor's name/shape/type, and where its bytes are, so this
reads the header and skips metadata values. Layout (GGUF v2/v3, little endian):
magic, u32 version, u64 n_tensors, u64 n_kv, n_kv × (string key, u32 type,
value), n_tensors × (string name, u32 n_dims, u64 dims[n_dims] (fastest first),
u32 ggml type, u64 offset), padding to `general.alignment` (default 32), data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# GGUF metadata value types -> fixed byte size (8 = string, 9 = array are variable)
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (slowest first), e.g. (rows, cols)
    type_name: str  # ggml type, e.g. "Q4_1"
    type_id: int
    offset: int  # absolute byte offset in the file

    def rows(self, path: str | Path, n: int) -> np.ndarray:
        """Raw bytes of the first `n` rows: uint8 [n, bytes_per_row] (1-D tensors: all of it)."""
        import gguf

        qt = gguf.GGMLQuantizationType(self.type_id)
        block, nbytes = gguf.GGML_QUANT_SIZES[qt]
        cols = self.shape[-1]
        row_bytes = cols // block * nbytes
        nrows = 1 if len(self.shape) == 1 else min(n, int(np.prod(self.shape[:-1])))
        mm = np.memmap(path, dtype=np.uint8, mode="r", offset=self.offset, shape=(nrows * row_bytes,))
        return np.array(mm).reshape(nrows, row_bytes)


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


def read_header(path: str | Path) -> tuple[dict, list[TensorInfo]]:
    """Return ({'general.architecture': str|None, 'general.alignment': int}, [TensorInfo])."""
    import gguf

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
            if key == "general.architecture" and vtype == 8:
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
        align = meta["general.alignment"]
        start = (b.p + align - 1) // align * align
        if start > len(data) and n_tensors:
            raise ValueError("truncated before the tensor data")
    infos = []
    for name, shape, tid, off in raw:
        try:
            tname = gguf.GGMLQuantizationType(tid).name
        except ValueError:
            tname = f"type{tid}"
        infos.append(TensorInfo(name, shape, tname, tid, start + off))
    return meta, infos
