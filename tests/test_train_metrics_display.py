"""The training progress line off a TTY: written through notme_mlx.ui (the one printer), to stderr, every
`every` steps and at the last, rank 0 only; stdout stays clean for data."""

import pytest

from notme_mlx import ui
from notme_mlx.train import metrics
from notme_mlx.train.metrics import LiveDisplay


def _m(step, **kw):
    m = {"phase_step": step, "loss": 1.23456, "ce": 1.0, "ul": 0.5, "lr": 1e-4, "grad_norm": 0.25,
         "tok_s": 1234.4, "peak_mem_gb": 0.5}
    m.update(kw)
    return m


@pytest.fixture
def clock(monkeypatch):
    """perf_counter of the metrics module under the test's control."""
    now = [100.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])
    monkeypatch.setenv("NOTME_PLAIN", "1")
    return now


def test_off_tty_line_goes_through_ui_every_n_steps_and_at_the_end(clock, monkeypatch, capsys):
    sent = []
    real_plain = ui.plain
    monkeypatch.setattr(ui, "plain", lambda line: (sent.append(line), real_plain(line)))
    with LiveDisplay("sft", total=5, start=0, every=2) as d:
        assert d._live is None  # NOTME_PLAIN: no rich live line
        for step in range(1, 6):
            clock[0] = 100.0 + step  # one second a step
            d.update(_m(step, skipped=3 if step == 5 else 0))
    # step s of 5 after s seconds: ETA = s / s * (5 - s) seconds
    want = [
        ("[sft] step 2/5  loss 1.2346  ce 1.0000  pen 0.5000  lr 1.00e-04  |g| 0.250  1234 tok/s  ETA 0:03  "
         "mem 0.50 GB"),
        ("[sft] step 4/5  loss 1.2346  ce 1.0000  pen 0.5000  lr 1.00e-04  |g| 0.250  1234 tok/s  ETA 0:01  "
         "mem 0.50 GB"),
        ("[sft] step 5/5  loss 1.2346  ce 1.0000  pen 0.5000  lr 1.00e-04  |g| 0.250  1234 tok/s  ETA 0:00  "
         "mem 0.50 GB  skipped 3"),
    ]
    assert sent == want
    out = capsys.readouterr()
    assert out.err == "".join(line + "\n" for line in want) and out.out == ""


def test_off_tty_line_resumed_phase_and_other_ranks(clock, capsys):
    with LiveDisplay("dpo", total=10, start=4, every=1) as d:
        clock[0] = 102.0  # 2 steps in 2 s since the resume at step 4: 1 s a step, 4 to go
        d.update(_m(6, loss=0.5, ce=0.25, ul=0.0, tok_s=99.6, lr=3e-5, grad_norm=12.3456, peak_mem_gb=1.234))
        ui.set_rank(1)
        try:
            d.update(_m(7))  # not rank 0: nothing
        finally:
            ui.set_rank(0)
    assert capsys.readouterr().err == ("[dpo] step 6/10  loss 0.5000  ce 0.2500  pen 0.0000  lr 3.00e-05  "
                                       "|g| 12.346  100 tok/s  ETA 0:04  mem 1.23 GB\n")


def test_ui_plain_writes_the_line_as_given(capsys):
    ui.plain("[x] 50% [bold]not markup[/bold]  two  spaces")
    assert capsys.readouterr().err == "[x] 50% [bold]not markup[/bold]  two  spaces\n"
