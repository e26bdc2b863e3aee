"""Where the binary AVSA probe loses its pairs: a per-category error analysis of a checkpoint.

Loads the last checkpoint of a pretraining workdir, embeds the validation clips exactly as
the training run's validation hook does (``pretraining.ValidationHook``), and splits the
held-out probe pairs by what the crop and the audio front hold: a view is *active* when a
labelled source is sounding in the crop within ``--radius`` degrees of the view direction.

- aligned pair (crop k, audio k): both sides show the same thing, active or not;
- misaligned pair (crop k, audio k+1): (crop active?, audio front active?).

A pair whose crop has no active source and whose audio has none in front looks the same
aligned or not to a classifier that sees one pair at a time; the report gives the accuracy
on the other ("decidable") pairs and the probe accuracy that perfect decidable pairs would
reach. Also the probe accuracy at fixed L2 penalties (the run's probe picks one by
cross-validation on its training half).

    python experiments/avsa_probe_analysis.py --workdir runs/avsa-foa-default \
        --out results/avsa_probe_analysis.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def view_activity(loader, max_clips: int, radius_deg: float) -> np.ndarray:
    """``[N, K]`` bool: a labelled source sounds within ``radius_deg`` of view k of clip n, in
    the loader's order (pass the validation hook's own loader: the same clips and views)."""
    from spatialav import geometry

    out, n = [], 0
    for batch in loader:
        for b in np.flatnonzero(batch["mask"]):
            rows = batch["labels"][b][batch["label_mask"][b]]
            dirs = batch["view_dirs"][b]
            if len(rows):
                d = geometry.angular_distance(
                    dirs[:, None, 0], dirs[:, None, 1],
                    np.deg2rad(rows[None, :, 3]), np.deg2rad(rows[None, :, 4]))
                out.append((np.rad2deg(d) < radius_deg).any(axis=1))
            else:
                out.append(np.zeros(len(dirs), bool))
            n += 1
        if n >= max_clips:
            break
    return np.stack(out[:max_clips])


def analyse(a, v, active, l2s) -> dict:
    from spatialav.metrics.logistic_probe import probe_predictions
    from spatialav.pretraining.validation import probe_pairs

    x, y, groups, wrong = probe_pairs(a, v)
    y = y.astype(bool)
    crop_active = np.tile(active.reshape(-1), 2)
    audio_active = np.concatenate([active.reshape(-1), np.roll(active, -1, axis=1).reshape(-1)])
    by_l2 = {l2: float(np.mean(probe_predictions(x, y, groups, l2)[0] == y)) for l2 in l2s}
    correct = probe_predictions(x, y, groups)[0] == y
    rows = []
    for aligned in (True, False):
        for ca in (True, False):
            for aa in (True, False):
                if aligned and ca != aa:
                    continue
                sel = (y == aligned) & (crop_active == ca) & (audio_active == aa)
                rows.append({"pair": "aligned" if aligned else "misaligned",
                             "crop_active": ca, "audio_front_active": aa,
                             "count": int(sel.sum()),
                             "accuracy": float(correct[sel].mean()) if sel.any() else None})
    blind = ~crop_active & ~audio_active
    decidable = ~blind
    # An absolute classifier can at best get the larger class of the blind pairs right.
    blind_best = max(np.sum(blind & y), np.sum(blind & ~y))
    return {
        "clips": len(a), "views": a.shape[1], "pairs": len(y),
        "probe": float(correct.mean()),
        "pairwise": float(np.mean(np.sum(a * v, -1) > np.sum(wrong * v, -1))),
        "decidable_pairs": int(decidable.sum()),
        "decidable_accuracy": float(correct[decidable].mean()),
        "blind_pairs": int(blind.sum()),
        "blind_accuracy": float(correct[blind].mean()) if blind.any() else None,
        "ceiling": float((decidable.sum() + blind_best) / len(y)),
        "categories": rows,
        "probe_by_l2": by_l2,
    }


def report(res: dict, command: str) -> str:
    lines = [
        "# Binary AVSA probe: where the pairs are lost", "",
        f"Produced by `{command}`.", "",
        f"Checkpoint `{res['checkpoint']}` (step {res['step']}); {res['clips']} validation clips "
        f"x {res['views']} views; {res['pairs']} probe pairs, each scored by the probe fold "
        "that did not see its clip.", "",
        f"- probe accuracy {res['probe']:.3f} (pairwise {res['pairwise']:.3f})",
        f"- decidable pairs (an active source in the crop or in the audio front): "
        f"{res['decidable_pairs']}, accuracy {res['decidable_accuracy']:.3f}",
        f"- blind pairs (neither): {res['blind_pairs']}, accuracy "
        f"{res['blind_accuracy']:.3f}" if res["blind_accuracy"] is not None else "- no blind pairs",
        f"- ceiling of a one-pair-at-a-time classifier with every decidable pair right: "
        f"{res['ceiling']:.3f}", "",
        "| pair | crop active | audio front active | pairs | accuracy |",
        "|---|---|---|---:|---:|",
    ]
    for r in res["categories"]:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        lines.append(f"| {r['pair']} | {r['crop_active']} | {r['audio_front_active']} | "
                     f"{r['count']} | {acc} |")
    lines += ["", "| probe L2 | accuracy |", "|---:|---:|"]
    lines += [f"| {l2:g} | {acc:.3f} |" for l2, acc in res["probe_by_l2"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True, help="a pretraining workdir (avsa task)")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: last)")
    ap.add_argument("--radius", type=float, default=25.0,
                    help="degrees: a source this close to a view counts as in it")
    ap.add_argument("--out", default=None, help="write the report here (.md; .json beside)")
    args = ap.parse_args(argv)

    from flax import nnx

    from spatialav import configs, pretraining
    from spatialav.data.resolve import resolve_dataset
    from spatialav.downstream.encoders import load_params, read_checkpoint
    from spatialav.models import AVModel
    from spatialav.train import mesh as mesh_lib

    config_file = os.path.join(args.workdir, "config.json")
    with open(config_file) as f:
        cfg = configs.config_from_dict(json.load(f)["config"], source=config_file)
    mcfg, params, step, _ = read_checkpoint(args.workdir, args.step)
    model = nnx.eval_shape(lambda: AVModel(mcfg, rngs=nnx.Rngs(0)))
    load_params(model, params, source=args.workdir)
    ds = resolve_dataset(cfg.data)
    hook = pretraining.ValidationHook(cfg, ds, mesh_lib.make_mesh())
    a, v = hook.embeddings(model)
    active = view_activity(hook.loader, len(a), args.radius)
    res = analyse(a, v, active, l2s=(1e-1, 1e-2, 1e-3, 1e-4, 1e-5))
    res.update(checkpoint=os.path.abspath(args.workdir), step=step)
    text = report(res, "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()
