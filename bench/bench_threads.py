"""Training ms/step with 2 vs 1 intra-op threads (TelME fusion, CMATH) on the demo MELD cache, alternating, best
of two (issue 16, item 6): ``python bench/bench_threads.py [CACHE_DIR]`` (default cache/demo-meld)."""
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.cache import load_cache
from pipeline.collate import make_loader, prepare_data
from pipeline.config import load_config
from pipeline.train import build_model, cpu_threads
cache = load_cache(sys.argv[1] if len(sys.argv) > 1 else "cache/demo-meld")
for name in ("telme", "cmath"):
    config = load_config(name, "demo-meld")
    data = prepare_data(config, cache, splits=("train",))
    torch.manual_seed(0)
    method = build_model(config, data)
    stage = method.stages()[-1]
    params = list(method.param_groups(stage))
    opt = torch.optim.AdamW(params, lr=1e-4)
    bs = int(config["stages"][stage.name]["batch_size"])
    batches = [b for _, b in zip(range(30), make_loader(data.splits["train"], batch_size=bs))]
    n_params = sum(p.numel() for p in method.parameters())
    method.train()
    def step(b):
        out = method(b, stage=stage.name); loss = sum(out.losses.values())
        opt.zero_grad(); loss.backward(); opt.step()
    res = {1: [], 2: []}
    for rep in range(2):
        for th in (2, 1):
            torch.set_num_threads(th)
            step(batches[0])
            t = time.perf_counter()
            for b in batches: step(b)
            res[th].append((time.perf_counter() - t) / len(batches) * 1000)
    print(f"{name}: {n_params/1e6:.2f} M params, stage {stage.name}, batch {bs}, auto -> {cpu_threads('auto', n_params, 2)} thread(s); "
          f"ms/step 2 threads {min(res[2]):.1f} (runs {', '.join(f'{x:.1f}' for x in res[2])}), "
          f"1 thread {min(res[1]):.1f} (runs {', '.join(f'{x:.1f}' for x in res[1])}), ratio 2/1 {min(res[2])/min(res[1]):.2f}", flush=True)
print("load average", " / ".join(f"{x:.2f}" for x in os.getloadavg()))
