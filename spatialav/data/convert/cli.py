"""The command-line options every converter shares, and running a conversion from them."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

from spatialav.data.convert import build


def parser(doc: str, *, clip_s: float | None, items_per_shard: int,
           layouts: Sequence[str]) -> argparse.ArgumentParser:
    d = build.ConvertConfig()
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", required=True, help="the dataset as distributed")
    p.add_argument("--out", required=True, help="output root (TFDS layout below it)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--sample-rate", type=int, default=d.sample_rate, help="Hz")
    p.add_argument("--fps", type=float, default=d.fps, help="output video frame rate")
    p.add_argument("--frame-size", type=int, nargs=2, default=d.frame_size, metavar=("H", "W"),
                   help="equirect frame size")
    p.add_argument("--clip-s", type=float, default=clip_s,
                   help="cut recordings into clips of this many seconds; 0: whole files "
                        f"(default {clip_s or 0})")
    p.add_argument("--av-tolerance", type=float, default=d.av_tolerance_s,
                   help="largest audio/video length mismatch kept, s")
    p.add_argument("--layout", action="append", default=None,
                   help="declared input channel layout, one per channel count (repeatable): "
                        "ambix, fuma, yt360 or e.g. 'X,Y,W,0,Z,0' / 'fuma:W,X,Y,Z' "
                        f"(default {' '.join(layouts)})")
    p.add_argument("--items-per-shard", type=int, default=items_per_shard,
                   help="input recordings per output shard (the unit of resumption)")
    p.add_argument("--validation-fraction", type=float, default=0.0,
                   help="hold out this fraction of the train recordings as 'validation'")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config(args, layouts: Sequence[str]) -> build.ConvertConfig:
    return build.ConvertConfig(
        sample_rate=args.sample_rate, fps=args.fps, frame_size=tuple(args.frame_size),
        clip_s=args.clip_s or None, av_tolerance_s=args.av_tolerance,
        layouts=tuple(args.layout or layouts), items_per_shard=args.items_per_shard)


def run(dataset: build.DatasetDef, items, args, cfg: build.ConvertConfig) -> str:
    """Convert, print the validation summary and the dataset directory; returns the latter."""
    t0 = time.perf_counter()
    out = build.build(dataset, items, args.out, cfg, workers=args.workers,
                      progress=not args.quiet)
    print(build.format_summary(build.load_report(out)), flush=True)
    print(f"converted in {time.perf_counter() - t0:.1f} s: {out}\n"
          f"report: {out / build.REPORT_FILE}", flush=True)
    return str(out)
