"""Fine-tuning benchmark (``make bench-finetune [ARGS="--sizes minilm roberta-large --device cuda"]``): a table.

Samples/s and peak memory of fine-tuning steps of a text encoder + head (``pipeline.finetune.EncoderClassifier``,
the module ``finetune`` trains: forward, CE, backward, AdamW step) at TelME's input shape (left-padded prompt,
the state at the final ``<mask>``), per precision (fp32, bf16 autocast) and with / without gradient
checkpointing. Sizes:

* ``minilm``: the real all-MiniLM-L6-v2 (offline profile; 22M parameters);
* ``roberta-large``: RoBERTa-large's architecture from its config (24 layers, 1024 wide, 355M parameters) with
  RANDOM weights: the same FLOPs as the paper's teacher, meaningless outputs (compute cost only).

Each row times ``--steps`` steps after ``--warmup`` untimed ones on random token ids of ``--seq-len`` tokens,
batch ``--batch-size`` (TelME: 4 utterances, up to 512 tokens). Peak memory: process RSS high-water mark on the
CPU, ``torch.cuda.max_memory_allocated`` on a GPU. A paper epoch (MELD train: 9,989 utterances) is extrapolated
from samples/s and printed as such.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MELD_TRAIN = 9989


def model_dir(size: str, tmp: Path) -> str:
    from extractors.profiles import minilm_dir

    if size == "minilm":
        return str(minilm_dir())
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    out = tmp / size
    if not out.exists():
        cfg = RobertaConfig(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                            intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1,
                            pad_token_id=1, bos_token_id=0, eos_token_id=2)
        RobertaModel(cfg).save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(str(out))  # ids < 30522 < 50265
    return str(out)


def run_case(weights: str, *, device: str, precision: str, checkpointing: bool, batch_size: int, seq_len: int,
             steps: int, warmup: int) -> dict[str, float]:
    import torch

    from pipeline.compare import PeakMemory
    from pipeline.finetune import EncoderClassifier, build_text_encoder

    enc = build_text_encoder("roberta-context", "offline", {"weights": weights, "speaker_format": "name",
                                                            "max_length": min(seq_len, 512)})
    model = EncoderClassifier(encoder=enc, num_classes=7, head_hidden=768, gradient_checkpointing=checkpointing)
    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    g = torch.Generator().manual_seed(0)
    ids = [[int(x) for x in torch.randint(1000, 20000, (seq_len - 1,), generator=g)] + [enc.tokenizer.mask_token_id]
           for _ in range(batch_size)]
    batch = {k: v.to(device) for k, v in enc.collate(ids).items()}
    batch["label"] = torch.randint(0, 7, (batch_size,), generator=g).to(device)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype is not None):
            loss = sum(model(batch, stage="finetune").losses.values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    return {"samples_s": steps * batch_size / seconds, "s_step": seconds / steps, "rss_mb": mem.rss_mb or 0.0,
            "cuda_mb": mem.cuda_mb, "params_m": params / 1e6}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["minilm"], choices=["minilm", "roberta-large"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--checkpointing", nargs="+", default=["off"], choices=["off", "on"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128, help="tokens per input (TelME: up to 512)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    where = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"fine-tuning steps: batch {a.batch_size} x {a.seq_len} tokens, {a.steps} timed steps, device {where}")
    head = ["encoder", "params (M)", "precision", "grad ckpt", "samples/s", "s/step", "peak RSS MB", "peak CUDA MB",
            f"MELD epoch ({MELD_TRAIN} utts), extrapolated"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in a.sizes:
            weights = model_dir(size, Path(tmp))
            for precision in a.precisions:
                for ck in a.checkpointing:
                    r = run_case(weights, device=a.device, precision=precision, checkpointing=ck == "on",
                                 batch_size=a.batch_size, seq_len=a.seq_len, steps=a.steps, warmup=a.warmup)
                    epoch = MELD_TRAIN / r["samples_s"]
                    rows.append([size + (" (random)" if size != "minilm" else ""), f"{r['params_m']:.0f}", precision,
                                 ck, f"{r['samples_s']:.2f}", f"{r['s_step']:.3f}", f"{r['rss_mb']:.0f}",
                                 "–" if r["cuda_mb"] is None else f"{r['cuda_mb']:.0f}",
                                 f"{epoch / 60:.1f} min" if epoch < 7200 else f"{epoch / 3600:.1f} h"])
                    print("  done:", " | ".join(rows[-1]), flush=True)
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
