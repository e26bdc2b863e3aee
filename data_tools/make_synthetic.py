"""Build the ``spatialav_synthetic`` dataset for a preset (resumable: rerun to finish).

    python data_tools/make_synthetic.py --preset tiny --out DIR [--workers N]

Prints the dataset directory, ``DIR/spatialav_synthetic/<preset>/<version>``.
"""

from __future__ import annotations

import argparse
import time

from spatialav.data import synthetic


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=sorted(synthetic.PRESETS))
    p.add_argument("--out", required=True, help="dataset root directory")
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: one per 50 clips, at most one per CPU)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    path = synthetic.build_synthetic(args.out, args.preset, workers=args.workers)
    print(f"built in {time.perf_counter() - t0:.1f} s: {path}", flush=True)


if __name__ == "__main__":
    main()
