"""Command line: ``python -m pipeline <command> ...`` (also ``accelerate launch -m pipeline <command>``).

Commands are looked up in a table of ``module:function`` entries; each function takes ``argv``
and returns an exit code. Every command runs under one error policy (``pipeline/errors.py``): an
expected failure prints one line and exits 2; ``--debug`` (anywhere on the line) shows the traceback.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("pipeline.corpora.demo", "generate the demo corpora (MELD / IEMOCAP / MOSI layouts)"),
    "read": ("pipeline.corpora.cli", "read a corpus and print its report"),
    "features": ("pipeline.extract", "extract features into the cache"),
    "train": ("pipeline.train", "train a method on a cache"),
    "finetune": ("pipeline.finetune", "fine-tune a text encoder on a corpus (then features --finetuned RUN)"),
    "evaluate": ("pipeline.evaluate", "re-score a saved run"),
    "analyse": ("pipeline.analysis", "per-head accuracy by where the demo planted each cue"),
    "predict": ("pipeline.predict", "emotions of a new clip or dialogue under a trained run"),
    "compare": ("pipeline.compare", "train every method that fits a cache; one table of all"),
    "export": ("pipeline.export", "write a run as a shareable model folder (HF layout, model card, no code)"),
}


def main(argv: list[str] | None = None) -> int:
    from pipeline.errors import run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        print("usage: python -m pipeline <command> [options] [--debug]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:<10} {help_}")
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return run_command(argv[0], module.cli, argv[1:], debug=debug)


if __name__ == "__main__":
    sys.exit(main())
