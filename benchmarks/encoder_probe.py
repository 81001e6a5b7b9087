"""Does the vision encoder know, patch by patch, which kind of shape it belongs to? A linear probe, measured.

    .venv/bin/python benchmarks/encoder_probe.py demo                       # the shipped model's encoder
    .venv/bin/python benchmarks/encoder_probe.py runs/demo/eva_vit_g.pth   # an encoder file (LAVIS layout)
    .venv/bin/python benchmarks/encoder_probe.py demo runs/demo/eva_vit_g.pth --json

The context token and ``llamavid search`` read the frame's patches one by one: the text-guided attention scores
each patch against the question, and a frame scores by its patches' log-sum-exp. So what a phrase can find in a
patch is what the patch's features hold. This draws held-out still frames like the search library's
(``llamavid.train.grounding.draw_frames``: one large shape, or two smaller ones side by side), encodes them,
takes every patch a shape covers (over 40% of it), and fits a linear classifier of the shape's kind (circle,
ring, bar, column) on 80% of those patches (standardised features, Adam, fixed seed); it reports the accuracy on
the other 20%, per kind, and the confusion matrix. The colour is probed the same way.

``--phrases`` (models only): also what the model's text-guided attention makes of them
(``llamavid.train.grounding.phrase_auc`` on 2,000 other held-out frames, seed 12345): how often a frame with
the named shape outscores one with the same kind in another colour, the same colour on another kind, or
anything else (AUC, averaged over the phrases), on whole frames and on search-index summaries of 1 and 3 runs.

A ring's patches read as a circle's tell a search for "a purple ring" that a purple circle is one, and look-closer
that the only ring of an hour is any of its circles.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def is_encoder_file(source: str) -> bool:
    """An encoder weights file (``.pth``/``.pt``), not a model: it has no text-guided attention to probe."""
    return source.endswith((".pth", ".pt"))


def load(source: str):
    """A model name or folder (-> the model) or an encoder weights file (-> the encoder alone); either has the
    ``encode_frames`` that ``grounding.phrase_frames`` calls."""
    import torch

    if not is_encoder_file(source):
        from llamavid.model.loading import load_model

        return load_model(source, dtype="float32", device="cpu")
    from types import SimpleNamespace

    from llamavid.model.vision import EvaVisionTransformer, VisionConfig, preprocess_frames

    sd = torch.load(source, map_location="cpu", weights_only=True)
    vit = EvaVisionTransformer(VisionConfig.from_state_dict(sd))
    vit.load_state_dict(sd)
    vit.eval()
    return SimpleNamespace(encode_frames=lambda frames: vit(preprocess_frames(frames)))


def probe(source: str, encoder, *, frames: int = 1500, seed: int = 5, steps: int = 500) -> dict:
    """The linear probe of ``encoder``'s patches (``load(source)``), kind and colour."""
    import numpy as np
    import torch

    from llamavid.data import synthetic as syn
    from llamavid.train.grounding import phrase_frames

    with torch.inference_mode():  # drawn, encoded and rounded through float16, as a .vidtok stores them
        data = phrase_frames(encoder, np.random.default_rng(seed), frames)
    feats, shapes = data.features, data.shapes
    rows, kinds, colours = [], [], []
    for i, on_frame in enumerate(shapes):
        for colour, kind, patches in on_frame:
            for p in np.nonzero(patches)[0]:
                rows.append(feats[i, 1 + p])
                kinds.append(syn.SHAPES.index(kind))
                colours.append(list(syn.COLORS).index(colour))
    x = torch.stack(rows)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[: len(x) * 4 // 5], order[len(x) * 4 // 5:]
    out: dict = {"encoder": source, "patches": len(x)}
    for name, labels, names in (("kind", torch.tensor(kinds), syn.SHAPES), ("colour", torch.tensor(colours),
                                                                              tuple(syn.COLORS))):
        torch.manual_seed(0)
        linear = torch.nn.Linear(x.shape[1], len(names))
        opt = torch.optim.Adam(linear.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(linear(x[train]), labels[train]).backward()
            opt.step()
        with torch.no_grad():
            pred = linear(x[test]).argmax(-1)
        truth = labels[test]
        out[name] = {"accuracy": round(float((pred == truth).float().mean()), 3),
                     "per_class": {n: round(float((pred[truth == k] == k).float().mean()), 3)
                                   for k, n in enumerate(names)}}
        if name == "kind":  # rows: the true kind; columns: the probe's answer
            out[name]["confusion"] = [[int(((truth == a) & (pred == b)).sum()) for b in range(len(names))]
                                      for a in range(len(names))]
    return out


def phrases(model, *, frames: int = 2000, seed: int = 12345) -> dict:
    """The phrase's attention AUCs (``grounding.phrase_auc``) on held-out frames, whole and as index summaries."""
    import numpy as np

    from llamavid.train import grounding

    data = grounding.phrase_frames(model, np.random.default_rng(seed), frames)
    return {name: {k: round(v, 3) for k, v in grounding.phrase_auc(model, data, parts=parts).items()}
            for name, parts in (("frames", 0), ("summaries of 1", 1), ("summaries of 3", 3))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", help="a model (name or folder) or an encoder file (.pth)")
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--json", action="store_true", help="one JSON line per encoder")
    parser.add_argument("--phrases", action="store_true",
                        help="(models) also the phrase attention's AUCs on held-out frames")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from llamavid.data.synthetic import SHAPES

    for source in args.sources:
        loaded = load(source)
        res = probe(source, loaded, frames=args.frames)
        if args.phrases and not is_encoder_file(source):
            res["phrases"] = phrases(loaded)
        if args.json:
            print(json.dumps(res), flush=True)
            continue
        k = res["kind"]
        print(f"{source}: kind {k['accuracy']:.1%} ("
              + ", ".join(f"{n} {v:.0%}" for n, v in k["per_class"].items())
              + f"), colour {res['colour']['accuracy']:.1%}, {res['patches']} patches")
        print("  confusion (rows: true kind; columns: the probe's):")
        for name, row in zip(SHAPES, k["confusion"]):
            print(f"  {name:>7} " + " ".join(f"{v:6d}" for v in row))
        for name, auc in res.get("phrases", {}).items():
            print(f"  phrase AUC, {name}: " + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in auc.items()))


if __name__ == "__main__":
    main()
