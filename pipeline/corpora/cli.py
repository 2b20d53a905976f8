"""``python -m pipeline read --corpus meld --root /data/MELD.Raw``: read a corpus, print its report."""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def cli(argv: list[str] | None = None) -> int:
    from pipeline.api import read_corpus

    p = argparse.ArgumentParser(prog="python -m pipeline read", description=cli.__doc__ or __doc__)
    p.add_argument("--corpus", default="demo-meld", help="corpus name from configs/corpora.yaml")
    p.add_argument("--root", default=None, help="corpus root (default: the catalog's)")
    p.add_argument("--report", default=None, help="also write the report as JSON here")
    p.add_argument("--asr", metavar="MODEL", default=None,
                   help="fill empty transcripts from the audio with this Whisper (dir or hub id); marked machine-made")
    p.add_argument("--strict", action="store_true", help="stop (exit 2) when any row, line or file was skipped")
    a = p.parse_args(argv)
    data = read_corpus(a.corpus, a.root, asr=a.asr)
    print(data.report.summary())
    if a.asr:
        print(f"ASR {a.asr}: filled {data.report.counts.get('asr_filled', 0)} missing transcript(s), each marked "
              f"machine-made in the report (fix ... filled by ASR)")
    if a.report:
        Path(a.report).write_text(data.report.to_json())
    if a.strict:
        data.report.strict_check()
    names = data.label_sets["primary"]
    for split in data.splits():
        recs = data.split(split)
        counts = Counter(names[r.label] for r in recs if r.label is not None and r.label >= 0)
        print(f"{split:<6} {len(recs):>6} utterances, {len({r.dialogue_id for r in recs}):>5} dialogues  "
              + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0
