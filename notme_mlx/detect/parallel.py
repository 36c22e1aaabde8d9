"""Run a Detector over many texts, optionally in worker processes (results keep input order)."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

_DET = None


def _init(detector) -> None:
    global _DET
    _DET = detector


def _run(texts: list[str]):
    return _batch(_DET, texts)


def _batch(detector, texts: list[str]):
    """Detections for `texts`; a detector with `detect_batch` (the learned stage) scores them together."""
    fn = getattr(detector, "detect_batch", None)
    return fn(texts) if fn is not None else [detector.detect(t) for t in texts]


def auto_workers(n_texts: int) -> int:
    """1 for small inputs (process start-up costs more than it saves), else up to 8 cores."""
    return 1 if n_texts < 20_000 else max(1, min(8, os.cpu_count() or 1))


def detect_many(detector, texts: list[str], workers: int | None = None, chunksize: int = 512, progress=None):
    """[Detection] for `texts`, in order.

    Args:
      detector: a Detector (pickled once into each worker).
      texts: the strings.
      workers: processes; None = auto_workers(len(texts)); 1 = in this process.
      progress: optional task with .advance(n).
    """
    n = len(texts)
    workers = auto_workers(n) if workers is None else max(1, workers)
    chunksize = max(1, min(chunksize, -(-n // (workers * 4))))
    if workers == 1 or n < 2:
        if getattr(detector, "detect_batch", None) is not None:
            out = []
            for i in range(0, n, 1024):
                out.extend(detector.detect_batch(texts[i:i + 1024]))
                if progress is not None:
                    progress.advance(len(texts[i:i + 1024]))
            return out
        out = []
        for t in texts:
            out.append(detector.detect(t))
            if progress is not None:
                progress.advance(1)
        return out
    out = []
    chunks = [texts[i:i + chunksize] for i in range(0, n, chunksize)]
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(detector,)) as ex:
        for res in ex.map(_run, chunks):
            out.extend(res)
            if progress is not None:
                progress.advance(len(res))
    return out
