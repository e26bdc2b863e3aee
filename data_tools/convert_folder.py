"""Convert a folder of 360° videos with FOA audio to a spatialav dataset (resumable).

    python data_tools/convert_folder.py --root VIDEOS --out DIR --layout ambix|fuma \\
        [--name folder360] [--clip-s 0] [--validation-fraction 0.1] [--test-fraction 0.1] \\
        [--workers N]

Every *.mp4 / *.m4v / *.mov below ROOT: its first video stream (equirect) and its first
4-channel audio stream, declared ambiX (ACN/SN3D) or FuMa. Writes DIR/<name>/<config>/1.0.0/
and conversion_report.json; prints a summary.
"""

from __future__ import annotations

import dataclasses

from spatialav.data.convert import cli, folder


def main(argv=None) -> str:
    p = cli.parser(__doc__, clip_s=None, items_per_shard=16, layouts=("ambix",))
    p.add_argument("--name", default=folder.DATASET.name, help="dataset name")
    p.add_argument("--test-fraction", type=cli.fraction, default=0.0,
                   help="hold out this fraction of the files as 'test'")
    args = p.parse_args(argv)
    if not args.layout:
        p.error("declare the audio's channel layout: --layout ambix or --layout fuma")
    dataset = dataclasses.replace(folder.DATASET, name=args.name)
    return cli.convert(dataset, lambda: folder.list_items(args.root, args.validation_fraction,
                                                          args.test_fraction),
                       args, ("ambix",))


if __name__ == "__main__":
    main()
