"""What a person watching a run sees: bytes, rate and time left, on a terminal and in a CI log."""

from __future__ import annotations

import io
import time

from chaosmirror.cli.progress import Progress
from chaosmirror.mirror import Event
from chaosmirror.report import Entry


def test_a_log_gets_the_bytes_the_rate_and_the_time_left():
    out = io.StringIO()
    progress = Progress(out, every=0.0)
    progress.start(3)
    progress.event(Event("planned", None, size=200_000_000, count=3))
    progress.started = time.monotonic() - 10  # ten seconds in
    progress.moved(50_000_000)
    progress.event(Event("done", None, Entry("docker.io/a/b:1", "t/a/b:1", "copied", size=50_000_000, seconds=9.5)))
    text = out.getvalue()
    assert "copying 3 images, 200.0 MB" in text
    assert "moved 50.0 MB of 200.0 MB (25%), 5.0 MB/s, about 30s left; 0/3 images done" in text
    assert "copied  t/a/b:1 50.0 MB 9.5s" in text  # the per-image line: size and time


def test_the_log_lines_come_every_few_seconds_not_per_chunk():
    out = io.StringIO()
    progress = Progress(out, every=3600.0)
    progress.event(Event("planned", None, size=10_000, count=1))
    for _ in range(100):
        progress.moved(100)
    assert "moved" not in out.getvalue() and progress.bytes == 10_000
