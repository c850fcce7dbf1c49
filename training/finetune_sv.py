"""Stage 2: train the x-vector head on the frozen shared encoder (the encoder stays identical).

    python -m training.finetune_sv --checkpoint /work/runs/main/checkpoint.pt [--per-speaker 4] [--steps 1500]

In the multi-task run each of the 740 identities appears in a batch about once per hundred steps,
too rarely for the AM-softmax head to learn. Here the encoder is frozen, so every layer's output is
computed once for a few utterances per training speaker (with the training augmentation), and the
head (layer weights, projector, TDNN, pooling, embedding layer, AM-softmax) is trained for many
cheap steps on those features. The result is written back into the checkpoint's `model` weights
(encoder untouched) as `checkpoint_sv.pt` beside it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from training.batches import BatchSampler
from training.corpus import Corpus
from training.export import load_checkpoint
from training.mixing import augment
from training.model import MultiTaskModel

DEFAULT_CORPUS = Path("/work/runs/corpus")


@torch.no_grad()
def layer_features(model: MultiTaskModel, audios: list[np.ndarray]) -> list[torch.Tensor]:
    """Per utterance (L+1, T, H) float16 hidden states of the frozen encoder."""
    out = []
    for a in audios:
        base = model.encode(torch.from_numpy(a)[None], None)
        out.append(torch.stack(base.hidden_states, dim=0)[:, 0].to(torch.float16))
    return out


def head_forward(model: MultiTaskModel, feats: list[torch.Tensor], crop_frames: int,
                 rng: np.random.Generator) -> torch.Tensor:
    """Embeddings (B, D) of random crops of the cached features through the x-vector head."""
    sv = model.sv
    weights = torch.softmax(sv.layer_weights, dim=-1)
    crops = []
    for f in feats:
        t = f.shape[1]
        n = min(t, crop_frames)
        s = int(rng.integers(0, t - n + 1))
        crops.append((f[:, s:s + n].float() * weights.view(-1, 1, 1)).sum(0))
    n = min(c.shape[0] for c in crops)
    h = sv.projector(torch.stack([c[:n] for c in crops]))
    for layer in sv.tdnn:
        h = layer(h)
    emb = sv.feature_extractor(torch.cat([h.mean(dim=1), h.std(dim=1)], dim=-1))
    return sv.classifier(emb)


def finetune(model: MultiTaskModel, corpus: Corpus, speakers: list[str], per_speaker: int, steps: int,
             batch: int = 64, lr: float = 2e-3, seed: int = 3, log=print) -> list[float]:
    """Train the x-vector head on cached encoder features; return the loss every 100 steps."""
    rng = np.random.default_rng(seed)
    by_spk = corpus.by_speaker("train")
    idx, labels = [], []
    for k, spk in enumerate(speakers):
        choice = rng.permutation(by_spk[spk])[:per_speaker]
        idx += [int(i) for i in choice]
        labels += [k] * len(choice)
    t0 = time.monotonic()
    feats = layer_features(model, [augment(rng, corpus.audio("train", i), strength=0.5) for i in idx])
    log(f"[sv] cached features of {len(idx)} utterances in {time.monotonic() - t0:.0f} s")
    labels_t = torch.tensor(labels)
    sv = model.sv
    params = [sv.layer_weights, *sv.projector.parameters(), *sv.tdnn.parameters(),
              *sv.feature_extractor.parameters(), sv.objective.weight]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    sv.train()
    history, running = [], 0.0
    for step in range(1, steps + 1):
        pick = rng.choice(len(idx), size=min(batch, len(idx)), replace=False)
        emb = head_forward(model, [feats[i] for i in pick], int(rng.integers(100, 250)), rng)
        loss = sv.objective(emb, labels_t[pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if step % 100 == 0:
            history.append(running / 100)
            log(f"[sv] step {step}/{steps} AM-softmax {running / 100:.3f} ({time.monotonic() - t0:.0f} s)")
            running = 0.0
    sv.eval()
    return history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--per-speaker", type=int, default=4)
    parser.add_argument("--speakers", type=int, help="use only the first N training speakers (quick runs)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model = load_checkpoint(args.checkpoint)
    model.sv.objective.margin = state["train"].get("am_margin", 0.2)
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    speakers = state["speakers"][: args.speakers] if args.speakers else state["speakers"]
    history = finetune(model, Corpus(args.corpus), speakers, args.per_speaker, args.steps,
                       log=lambda s: print(s, flush=True))
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    state["model"] = model.state_dict()
    state["sv_finetune"] = {"per_speaker": args.per_speaker, "steps": args.steps, "speakers": len(speakers),
                            "history": history}
    out = args.checkpoint.with_name("checkpoint_sv.pt")
    torch.save(state, out)
    print(f"[sv] wrote {out}")


if __name__ == "__main__":
    main()
