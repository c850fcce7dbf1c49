"""Stage 2: train the x-vector head on the frozen shared encoder (the encoder stays identical).

    python -m training.finetune_sv --checkpoint /work/runs/main/checkpoint.pt [--per-speaker 8] [--steps 3000]
                                  [--crop-frames 100 250]

In the multi-task run each of the 740 identities appears in a batch about once per hundred steps,
too rarely for the AM-softmax head to learn. Here the encoder is frozen, so every layer's output is
computed once for a few utterances per training speaker (with the training augmentation), and the
head (layer weights, projector, TDNN, pooling, embedding layer, AM-softmax) is trained for many
cheap steps on those features. The result is written back into the checkpoint's `model` weights
(encoder untouched) as `checkpoint_sv.pt` beside it.

Two details make it learn in minutes rather than not at all (measured: with transformers' `randn`
class weights the 740-way loss stayed at chance, 12.5, for 600 steps): the AM-softmax class
weights start at unit norm, so Adam's per-element steps turn them quickly, and each batch holds
`clips` crops of each of its speakers, which adds an angular prototypical term (Chung et al.,
2020: each crop against its speaker's other crops in the batch) that works from the first step.
Progress is the equal error rate over all pairs of validation clips (unseen speakers), and
over pairs of turns inside validation conversations.

Two batch compositions were tried and removed for no gain (docs/training.md has the figures):
half of each batch as turns of training conversations (`--conversation-turns`, turns 0.127 against
0.125 on run 4's encoder) and batches of few voice families (`--families`, 0.146).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from training.corpus import Corpus, build_conversations
from training.export import load_checkpoint
from training.mixing import SAMPLE_RATE, Mixture, augment
from training.model import MultiTaskModel, angular_prototypical_loss, unit_norm_classes

DEFAULT_CORPUS = Path("/work/runs/corpus")

# The shipped model's stage 2 (`sv_finetune` in models/embedded/training_history.json records it; a
# test keeps these defaults equal to that record).
PER_SPEAKER = 8
STEPS = 3000
CROP_FRAMES = (100, 250)
LR = 2e-3


@torch.no_grad()
def layer_features(model: MultiTaskModel, audios: list[np.ndarray]) -> list[torch.Tensor]:
    """Per utterance (L+1, T, H) float16 hidden states of the frozen encoder."""
    out = []
    for a in audios:
        base = model.encode(torch.from_numpy(a)[None], None)
        out.append(torch.stack(base.hidden_states, dim=0)[:, 0].to(torch.float16))
    return out


def clean_turns(mixture: Mixture, min_s: float = 1.0, max_s: float = 8.0) -> list[tuple[str, np.ndarray]]:
    """(speaker, audio) for each turn of `mixture`: its samples that no other turn overlaps, the
    first `max_s` seconds of them; turns with less than `min_s` seconds left are dropped."""
    out = []
    for seg in mixture.segments:
        keep = np.ones(seg.end - seg.start, dtype=bool)
        for other in mixture.segments:
            a, b = max(other.start, seg.start), min(other.end, seg.end)
            if other is not seg and a < b:
                keep[a - seg.start:b - seg.start] = False
        audio = mixture.audio[seg.start:seg.end][keep][: int(max_s * SAMPLE_RATE)]
        if len(audio) >= min_s * SAMPLE_RATE:
            out.append((seg.speaker, audio.astype(np.float32)))
    return out


def conversation_turns(corpus: Corpus, split: str, count: int, seed_tag: int,
                       min_s: float = 1.0) -> list[tuple[int, str, np.ndarray]]:
    """(conversation number, speaker, clean turn audio) from `count` conversations of `split`,
    built as the test conversations are."""
    convs = build_conversations(corpus, split, count, seed_tag)
    return [(n, spk, audio) for n, (_, mix) in enumerate(convs) for spk, audio in clean_turns(mix, min_s)]


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


@torch.no_grad()
def pair_cosines(model: MultiTaskModel, feats: list[torch.Tensor]) -> np.ndarray:
    """(N, N) cosines between the embeddings of whole `feats` (eval mode, no cropping). The mode
    is restored afterwards, not forced to train: `model.sv` holds the shared encoder, which must
    stay in eval mode for features computed later (dropout and time masking are random)."""
    was_training = model.sv.training
    model.sv.eval()
    emb = torch.cat([head_forward(model, [f], 10 ** 6, np.random.default_rng(0)) for f in feats])
    emb = torch.nn.functional.normalize(emb, dim=-1)
    model.sv.train(was_training)
    return (emb @ emb.T).numpy()


def turn_pair_eer(model: MultiTaskModel, feats: list[torch.Tensor], conv: list[int], speakers: list[str]) -> float:
    """Equal error rate over pairs of whole turns from the same conversation (the pairs a
    conversation's clustering has to tell apart); NaN without both kinds of pair."""
    from training.scoring import equal_error_rate

    sim = pair_cosines(model, feats)
    c, s = np.asarray(conv), np.asarray(speakers)
    iu = np.triu_indices(len(c), 1)
    within = c[iu[0]] == c[iu[1]]
    same = (s[iu[0]] == s[iu[1]])[within]
    if same.all() or not same.any():
        return float("nan")  # no target or no impostor pair (tiny corpora)
    return equal_error_rate(sim[iu][within][same], sim[iu][within][~same])[0]


def pair_eer(model: MultiTaskModel, feats: list[torch.Tensor], labels: list[int]) -> float:
    """Equal error rate over all pairs of `feats` (full-length clips), cosine of the embeddings."""
    from training.scoring import equal_error_rate

    sim = pair_cosines(model, feats)
    lab = np.asarray(labels)
    iu = np.triu_indices(len(lab), 1)
    same = lab[iu[0]] == lab[iu[1]]
    return equal_error_rate(sim[iu][same], sim[iu][~same])[0]


@torch.no_grad()
def reset_xvector_head(model: MultiTaskModel) -> None:
    """Fresh x-vector head (layer weights, projector, TDNN, embedding layer) with PyTorch's
    Kaiming-uniform Linear init. The multi-task run's head can arrive dead (every TDNN ReLU off:
    all clips give the same embedding, cosine 1.000), and transformers' N(0, 0.02) init shrinks
    activations through five ReLU layers."""
    sv = model.sv
    for module in (sv.projector, *(layer.kernel for layer in sv.tdnn), sv.feature_extractor):
        module.reset_parameters()
    sv.layer_weights.fill_(1.0 / sv.layer_weights.numel())


@torch.no_grad()
def center_embeddings(model: MultiTaskModel, feats: list[torch.Tensor], rng: np.random.Generator,
                      n: int = 256) -> float:
    """Shift the embedding layer's bias so that embeddings of training clips average to zero;
    return the mean pairwise cosine before. Without batch norm in transformers' x-vector head the
    pooled ReLU statistics share one large common direction (measured: every pair of clips scored
    ~0.99), where cosine losses have almost no gradient."""
    sv = model.sv
    sv.eval()
    pick = rng.choice(len(feats), size=min(n, len(feats)), replace=False)
    emb = torch.cat([head_forward(model, [feats[int(i)]], 250, rng) for i in pick])
    unit = torch.nn.functional.normalize(emb, dim=-1)
    before = float((unit @ unit.T).mean())
    sv.feature_extractor.bias -= emb.mean(0)  # classifier is the identity: embeddings = its input
    sv.train()
    return before


def finetune(model: MultiTaskModel, corpus: Corpus, speakers: list[str], per_speaker: int, steps: int,
             batch_speakers: int = 32, clips: int = 2, lr: float = LR, seed: int = 3,
             reinit: bool = True, crop_frames: tuple[int, int] = CROP_FRAMES,
             val_conversations: int = 20, log=print) -> list[dict]:
    """Train the x-vector head on cached encoder features; every 100 steps log and return the
    mean losses and the validation pair EERs (clips, and turns within conversations). Each batch's
    clip crops are `crop_frames` (min, max) encoder frames long, drawn per batch (shorter crops
    were measured: docs/training.md, run 4)."""
    if per_speaker < clips:
        raise ValueError(f"per_speaker ({per_speaker}) must be at least clips per batch ({clips})")
    if not 0 < crop_frames[0] < crop_frames[1]:
        raise ValueError(f"crop_frames must be (min, max) with 0 < min < max, got {crop_frames}")
    rng = np.random.default_rng(seed)
    by_spk = corpus.by_speaker("train")
    idx, labels = [], []
    for k, spk in enumerate(speakers):
        choice = rng.permutation(by_spk[spk])[:per_speaker]
        idx += [int(i) for i in choice]
        labels += [k] * len(choice)
    t0 = time.monotonic()
    feats = layer_features(model, [augment(rng, corpus.audio("train", i), strength=0.5) for i in idx])
    val_idx = [i for v in corpus.by_speaker("val").values() for i in v[:4]]
    val_labels = [corpus.speakers("val").index(corpus.rows["val"][i]["speaker"]) for i in val_idx]
    val_feats = layer_features(model, [corpus.audio("val", i) for i in val_idx])
    val_turns = conversation_turns(corpus, "val", val_conversations, seed_tag=78, min_s=0.5)
    val_turn_feats = layer_features(model, [audio for _, _, audio in val_turns])
    val_conv, val_spk = [c for c, _, _ in val_turns], [s for _, s, _ in val_turns]

    def validate() -> tuple[float, float]:
        return pair_eer(model, val_feats, val_labels), turn_pair_eer(model, val_turn_feats, val_conv, val_spk)

    log(f"[sv] cached features of {len(idx)} training utterances, "
        f"{len(val_idx)} validation utterances and {len(val_turns)} validation turns in {time.monotonic() - t0:.0f} s; "
        "validation pair EER before: clips {:.3f}, turns {:.3f}".format(*validate()))
    clips_of = {}
    for n, k in enumerate(labels):
        clips_of.setdefault(k, []).append(n)
    labels_t = torch.tensor(labels)
    sv = model.sv
    unit_norm_classes(model)  # see the module docstring
    if reinit:
        reset_xvector_head(model)
    log(f"[sv] mean cosine between training clips {center_embeddings(model, feats, rng):.3f}; embeddings centred")
    ap_w, ap_b = torch.nn.Parameter(torch.tensor(10.0)), torch.nn.Parameter(torch.tensor(-5.0))
    params = [sv.layer_weights, *sv.projector.parameters(), *sv.tdnn.parameters(),
              *sv.feature_extractor.parameters(), sv.objective.weight, ap_w, ap_b]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    sv.train()
    history, run_am, run_ap = [], 0.0, 0.0
    n_spk = min(batch_speakers, len(clips_of))
    labelled = np.asarray(list(clips_of))
    for step in range(1, steps + 1):
        spk = rng.choice(labelled, size=n_spk, replace=False)
        pick = [int(j) for k in spk for j in rng.choice(clips_of[int(k)], size=clips, replace=False)]
        emb = head_forward(model, [feats[i] for i in pick], int(rng.integers(*crop_frames)), rng)
        target = labels_t[pick]
        am = sv.objective(emb, target)
        ap = angular_prototypical_loss(emb, clips, ap_w, ap_b)
        loss = am + ap
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run_am += am.item()
        run_ap += ap.item()
        if step % 100 == 0 or step == steps:
            k = 100 if step % 100 == 0 else step % 100
            eer, turn_eer = validate()
            history.append({"step": step, "am_softmax": round(run_am / k, 4), "prototypical": round(run_ap / k, 4),
                            "val_pair_eer": round(eer, 4), "val_turn_pair_eer": round(turn_eer, 4)})
            log(f"[sv] step {step}/{steps} AM-softmax {run_am / k:.3f} prototypical {run_ap / k:.3f} | "
                f"val pair EER clips {eer:.3f}, turns {turn_eer:.3f} ({time.monotonic() - t0:.0f} s)")
            run_am, run_ap = 0.0, 0.0
    sv.eval()
    return history


def build_parser() -> argparse.ArgumentParser:
    """The command's options; the recipe's defaults are the shipped head's (the constants above)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--per-speaker", type=int, default=PER_SPEAKER)
    parser.add_argument("--speakers", type=int, help="use only the first N training speakers (quick runs)")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crop-frames", type=int, nargs=2, default=CROP_FRAMES, metavar=("MIN", "MAX"),
                        help="training crops of MIN..MAX encoder frames (20 ms each)")
    parser.add_argument("--out", type=Path, help="default: checkpoint_sv.pt beside --checkpoint")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model = load_checkpoint(args.checkpoint)
    model.sv.objective.margin = state["train"].get("am_margin", 0.2)
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    speakers = state["speakers"][: args.speakers] if args.speakers else state["speakers"]
    history = finetune(model, Corpus(args.corpus), speakers, args.per_speaker, args.steps, lr=args.lr,
                       crop_frames=tuple(args.crop_frames),
                       log=lambda s: print(s, flush=True))
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    state["model"] = model.state_dict()
    state["sv_finetune"] = {"per_speaker": args.per_speaker, "steps": args.steps, "lr": args.lr,
                            "speakers": len(speakers), "crop_frames": list(args.crop_frames), "history": history}
    out = args.out or args.checkpoint.with_name("checkpoint_sv.pt")
    torch.save(state, out)
    print(f"[sv] wrote {out}")


if __name__ == "__main__":
    main()
