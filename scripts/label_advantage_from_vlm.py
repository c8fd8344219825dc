"""Relabel `adv_ind` with a trained value model (stage 5 of RECAP).

    uv run scripts/label_advantage_from_vlm.py <config> --data_dir=<LeRobot dataset> --output_dir=<new dataset>
        [--checkpoint_dir=<value run>] [--tokenizer_path=<gemma3 spm>] [--lookahead=50] [--top_percent=30]

Configs (`--help` lists them): `default` (the community labeller's settings), `yam_vial`, `demo`, `sim`. Without a
config name the flags apply to `default`, so the community command line works as before: --data_dir
--checkpoint_dir --tokenizer_path --batch_size --lookahead --top_percent --human_col --adv_col --use_ema/--no-use-ema
(or --use_ema=false). Unlike the community labeller the source dataset is never modified: a new dataset is written
at --output_dir (unchanged videos hard-linked). --in_place rewrites the source atomically instead. Values are
cached per episode in <output>.relabel_cache, so a killed run resumes; a report (JSON + PNGs) goes to
<output>.relabel_report.

Every local device is used; several hosts run the same command with training's distributed flags or environment
(README: "Relabelling at scale").
"""

from openpi.relabel import relabel_cli
from openpi.shared import cli


def main(argv=None):
    return cli.run(relabel_cli.main, argv, name="openpi.label_advantage")


if __name__ == "__main__":
    main()
