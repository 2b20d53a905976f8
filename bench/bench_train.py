"""Training-epoch benchmark (``make bench-train``): prints a table.

Seconds per training epoch of TelME's fusion stage on the demo MELD cache, against the same epoch
when every step decodes the raw clips and runs the same frozen encoders (what the authors' code
does every epoch): same batch size, same encoders (the ``offline`` profile), same model and
optimizer. The raw epoch is timed on its first ``--raw-steps`` steps and extrapolated (it is the
slow one). Target (issue 5): the cache wins by >= 20x.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", default=str(ROOT / "cache" / "demo-meld"))
    p.add_argument("--demo", default=str(ROOT / "data" / "demo" / "meld"))
    p.add_argument("--raw-steps", type=int, default=15, help="steps timed for the decode-every-step epoch")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from pipeline.cache import load_cache
    from pipeline.collate import make_loader, prepare_data
    from pipeline.config import load_config
    from pipeline.corpora.base import read_corpus
    from pipeline.extract import ExtractSettings, build_encoder, encoder_inputs, modality_input
    from pipeline.train import build_model

    if not Path(a.cache, "meta.json").exists():
        raise SystemExit(f"{a.cache}: no cache; run `make features` first")
    torch.manual_seed(0)
    cache = load_cache(a.cache)
    config = load_config("telme", "demo-meld")
    data = prepare_data(config, cache, splits=("train",))
    method = build_model(config, data)
    stage = next(s for s in method.stages() if s.name == "fusion")
    params = method.param_groups(stage)
    for q in method.parameters():
        q.requires_grad_(False)
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-4)
    bs = int(config["stages"]["fusion"]["batch_size"])
    ds = data.splits["train"]
    loader = make_loader(ds, batch_size=bs)
    n_steps = len(loader)

    def step(batch) -> None:
        out = method(batch, stage="fusion")
        loss = sum(out.losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    method.train()
    t0 = time.perf_counter()
    for batch in loader:
        step(batch)
    cached_epoch = time.perf_counter() - t0

    # The same epoch, but every step decodes its clips and runs the frozen encoders.
    records = {r.utterance_id: r for r in read_corpus("meld", a.demo).records}
    ids = list(cache.dataset["train"]["utterance_id"])
    missing = [u for u in ids if u not in records]
    if missing:
        raise SystemExit(f"{a.demo} does not hold the cache's utterances (e.g. {missing[0]}): wrong --demo?")
    items = {it.utterance_id: it for it in encoder_inputs(list(records.values()))}
    roles = config["features"]
    settings = ExtractSettings(encoders=[], progress=False)
    encoders = {role: build_encoder(col.split(".", 1)[1], settings) for role, col in roles.items()}
    t1 = time.perf_counter()
    done = 0
    for i, batch in enumerate(loader):
        if i >= a.raw_steps:
            break
        chunk = ids[i * bs:(i + 1) * bs]
        for role, enc in encoders.items():
            samples = [enc.load(modality_input(items[u], enc.modality)) for u in chunk]
            batch[role] = torch.from_numpy(enc.encode(samples).vec)
        step(batch)
        done += 1
    raw_per_step = (time.perf_counter() - t1) / max(done, 1)
    raw_epoch = raw_per_step * n_steps
    print(f"\nTelME fusion stage, demo MELD train split: {len(ds)} utterances, batch {bs}, {n_steps} steps/epoch, "
          f"{torch.get_num_threads()} torch threads")
    print("| epoch | seconds/epoch | ms/step |\n|---|---:|---:|")
    print(f"| from the features cache | {cached_epoch:.2f} | {cached_epoch / n_steps * 1000:.1f} |")
    print(f"| decode clips + frozen encoders every step ({done} steps timed) | {raw_epoch:.1f} | "
          f"{raw_per_step * 1000:.0f} |")
    print(f"\ncache speed-up: {raw_epoch / cached_epoch:.0f}x (target >= 20x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
