"""A real ``extract`` process over the small test corpus of ``test_extract.py``, for the kill / race
tests (they SIGKILL it or run two at once). Not a test module (leading underscore).

    python tests/_extract_child.py MEDIA_DIR CACHE_DIR ENCODERS [--workers N] [--kill-in-encode K]
                                   [--delay S] [--big] [--no-wait] [--go FILE] [--hold FILE]

ENCODERS: comma list of ``chars`` / ``bytes``. ``--kill-in-encode K``: the process SIGKILLs itself in
its K-th ``encode`` call. ``--delay S``: every encode sleeps S seconds (so runs overlap / can be
caught mid-way). ``--big``: ``load`` returns 4 MB per item (DataLoader workers then block on a full
pipe when the parent dies -- the case that left orphans). ``--hold FILE``: the first encode call
(made while this run holds the cache lock) waits until FILE exists (at most 120 s), so a test can
make two runs overlap for sure. Prints ``pid <n>`` first."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_extract import BytesEncoder, CharEncoder, make_corpus, settings  # noqa: E402

from pipeline.cache import CacheLocked  # noqa: E402
from pipeline.extract import extract  # noqa: E402


class Slow:
    """Wraps an encoder's ``encode``: sleeps, and SIGKILLs the process at the K-th call."""

    def __init__(self, delay: float, kill_at: int | None, hold: str | None = None) -> None:
        self.delay, self.kill_at, self.hold, self.calls = delay, kill_at, hold, 0

    def __call__(self, encode, samples):
        self.calls += 1
        if self.hold and self.calls == 1:
            deadline = time.time() + 120
            while not Path(self.hold).exists() and time.time() < deadline:
                time.sleep(0.02)
        if self.kill_at is not None and self.calls >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.delay)
        return encode(samples)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("media")
    p.add_argument("cache")
    p.add_argument("encoders")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--kill-in-encode", type=int, default=None)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--big", action="store_true")
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--hold", help="the first encode waits until this file exists (runs overlap for sure)")
    p.add_argument("--go", help="after the imports, wait until this file exists (to start two runs together)")
    a = p.parse_args()
    print(f"pid {os.getpid()}", flush=True)
    if a.go:
        while not Path(a.go).exists():
            time.sleep(0.02)
    Path(a.media).mkdir(parents=True, exist_ok=True)
    data = make_corpus(Path(a.media))
    hook = Slow(a.delay, a.kill_in_encode, a.hold)
    encoders = []
    for name in a.encoders.split(","):
        enc = {"chars": CharEncoder, "bytes": BytesEncoder}[name]()
        inner_encode, inner_load = enc.encode, enc.load
        enc.encode = lambda samples, _e=inner_encode: hook(_e, samples)  # type: ignore[method-assign]
        if a.big:
            enc.load = lambda item, _l=inner_load: _BigLoad(_l(item))  # type: ignore[method-assign]
        encoders.append(enc)
    s = settings(*encoders)
    s.num_workers = a.workers
    try:
        extract(data, Path(a.cache), s, wait=not a.no_wait)
    except CacheLocked as e:
        print(f"features: {e}", file=sys.stderr)
        return 2
    print("done", flush=True)
    return 0


class _BigLoad(str):
    """A loaded sample that pickles to ~4 MB (what a decoded clip weighs), still a str for encode."""

    def __reduce__(self):
        return (_BigLoad._rebuild, (str(self), b"\0" * (4 << 20)))

    @staticmethod
    def _rebuild(text, _payload):
        return _BigLoad(text)


if __name__ == "__main__":
    sys.exit(main())
