"""The command-line options every converter shares, and running a conversion from them.

Bad input (a missing or wrong ``--root``, settings off the grid, an output folder holding
another conversion) and a run that writes no clip end with one ``error:`` line on stderr and
exit status 1, no traceback; tracebacks are left to bugs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from spatialav.data.convert import build

DEFAULT_VALIDATION_FRACTION = 0.1


def fraction(text: str) -> float:
    """argparse type of a held-out fraction, in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


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
    p.add_argument("--force-layout", action="store_true",
                   help="convert with --layout even where a file declares another layout "
                        "(Opus channel mapping family 2/3, an mp4 SA3D box); without it such "
                        "files are skipped")
    p.add_argument("--items-per-shard", type=int, default=items_per_shard,
                   help="input recordings per output shard (the unit of resumption)")
    p.add_argument("--validation-fraction", type=fraction, default=DEFAULT_VALIDATION_FRACTION,
                   help="hold out this fraction of the train recordings (at least one when "
                        "there are two or more) as 'validation', which pretraining evaluates "
                        f"on; 0: none (default {DEFAULT_VALIDATION_FRACTION})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def fail(message: str):
    """End a converter run on bad input: one line on stderr, exit status 1."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def convert(dataset: build.DatasetDef, list_items: Callable[[], Sequence[build.Item]], args,
            layouts: Sequence[str]) -> str:
    """Check ``--root``, list the items, convert them (``run``); bad input ends in ``fail``."""
    root = Path(args.root)
    if not root.exists():
        fail(f"--root {root} does not exist")
    if not root.is_dir():
        fail(f"--root {root} is not a directory")
    try:
        return run(dataset, list_items(), args, config(args, layouts))
    except (ValueError, OSError) as err:  # bad input or settings; each message names its file
        fail(str(err))


def config(args, layouts: Sequence[str]) -> build.ConvertConfig:
    return build.ConvertConfig(
        sample_rate=args.sample_rate, fps=args.fps, frame_size=tuple(args.frame_size),
        clip_s=args.clip_s or None, av_tolerance_s=args.av_tolerance,
        layouts=tuple(args.layout or layouts), force_layout=args.force_layout,
        items_per_shard=args.items_per_shard)


def run(dataset: build.DatasetDef, items, args, cfg: build.ConvertConfig) -> str:
    """Convert, print the validation summary and the dataset directory; returns the latter.
    A run that writes no clip ``fail`` s, saying why."""
    t0 = time.perf_counter()
    out = build.build(dataset, items, args.out, cfg, workers=args.workers,
                      progress=not args.quiet)
    report = build.load_report(out)
    print(build.format_summary(report), flush=True)
    print(f"converted in {time.perf_counter() - t0:.1f} s: {out}\n"
          f"report: {out / build.REPORT_FILE}", flush=True)
    if report["summary"]["clips_written"] == 0:
        fail(no_clips_message(report, cfg, out / build.REPORT_FILE))
    for split, counts in report["summary"]["per_split"].items():
        if counts["items_in"] and not counts["clips"] and split in build.SPLIT_ORDER:
            print(f"warning: split {split!r} got no clips: all its {counts['items_in']} "
                  "recordings were skipped", file=sys.stderr, flush=True)
    return str(out)


def no_clips_message(report: dict, cfg: build.ConvertConfig, report_path) -> str:
    """Why a run wrote nothing and what to change: the common case of recordings all shorter
    than ``--clip-s`` gets the lengths that would work."""
    entries = report["items"]
    kinds = report["summary"]["skipped_by_kind"]
    if set(kinds) == {"too-short"}:
        longest = max(e["duration_s"] for e in entries)
        fits = build.longest_clip(longest, cfg.fps)
        fix = f"pass --clip-s {fits:g} or " if fits else "pass "
        return (f"no clips written: all {len(entries)} recordings are shorter than --clip-s "
                f"{cfg.clip_s:g} (the longest lasts {longest:.2f} s); {fix}--clip-s 0 to keep "
                "whole recordings")
    listed = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    return (f"no clips written: all {len(entries)} recordings were skipped ({listed}); the "
            f"reasons are listed above and in {report_path}")
