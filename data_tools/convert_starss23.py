"""Convert STARSS23 (DCASE 2023 Task 3 dev set) to a spatialav dataset (resumable: rerun to finish).

    python data_tools/convert_starss23.py --root STARSS23 --out DIR [--clip-s 10] \\
        [--sample-rate 24000] [--fps 10] [--frame-size 128 256] [--validation-fraction 0.1] \\
        [--workers N]

ROOT holds foa_dev/, video_dev/ and metadata_dev/, each with dev-{train,test}-{sony,tau}/.
Writes DIR/starss23/<config>/1.0.0/ with train / validation / test splits, DCASE labels
re-based per clip, and conversion_report.json (every recording: written clips, or skipped
with the reason); prints a summary.
"""

from __future__ import annotations

from spatialav.data.convert import cli, starss23


def main(argv=None) -> str:
    p = cli.parser(__doc__, clip_s=10.0, items_per_shard=1, layouts=("ambix",))
    args = p.parse_args(argv)
    return cli.convert(starss23.DATASET,
                       lambda: starss23.list_items(args.root, args.validation_fraction), args,
                       ("ambix",))


if __name__ == "__main__":
    main()
