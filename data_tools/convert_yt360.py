"""Convert YT-360 (Morgado et al.) to a spatialav dataset (resumable: rerun to finish).

    python data_tools/convert_yt360.py --root yt360 --out DIR [--clip-s 0] \\
        [--layout yt360 --layout ambix] [--validation-fraction 0.1] [--workers N]

ROOT holds video/{YTID}-{start}.mp4, audio/{YTID}-{start}.m4a, train.txt and test.txt.
6-channel audio is read with the yt360 map [X, Y, W, 0, Z, 0] and 4-channel audio as ambiX
unless --layout says otherwise. Writes DIR/yt360/<config>/1.0.0/ and conversion_report.json;
prints a summary.
"""

from __future__ import annotations

from spatialav.data.convert import cli, yt360


def main(argv=None) -> str:
    p = cli.parser(__doc__, clip_s=None, items_per_shard=32, layouts=yt360.DEFAULT_LAYOUTS)
    args = p.parse_args(argv)
    return cli.convert(yt360.DATASET,
                       lambda: yt360.list_items(args.root, args.validation_fraction), args,
                       yt360.DEFAULT_LAYOUTS)


if __name__ == "__main__":
    main()
