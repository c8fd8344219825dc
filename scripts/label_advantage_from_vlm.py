"""Relabel `adv_ind` with a trained value model (stage 5 of RECAP).

    uv run scripts/label_advantage_from_vlm.py --data_dir=<LeRobot dataset> --checkpoint_dir=<value run>
        --output_dir=<new dataset> [--tokenizer_path=<gemma3 spm>] [--lookahead=50] [--top_percent=30]

The community flags work as they did there (underscores or dashes): --data_dir --checkpoint_dir --tokenizer_path
--batch_size --lookahead --top_percent --human_col --adv_col --use_ema/--no-use-ema (or --use_ema=false). Unlike
the community labeller the source dataset is never modified: a new dataset is written at --output_dir (unchanged
videos hard-linked). --in_place rewrites the source atomically instead. Values are cached per episode in
<output>.relabel_cache, so a killed run resumes; a report (JSON + PNGs) goes to <output>.relabel_report.
"""

from collections.abc import Sequence
import logging
import sys

import tyro

from openpi.recap import relabel
from openpi.recap import report
from openpi.shared import errors

logger = logging.getLogger("openpi.label_advantage")

_BOOL_FLAGS = ("--use-ema", "--in-place", "--overwrite", "--progress")


def normalize_flags(args: Sequence[str]) -> list[str]:
    """`--top_percent=30` == `--top-percent 30`; booleans also accept `--use_ema=false` / `--in_place=true`."""
    out = []
    for arg in args:
        if arg.startswith("--"):
            name, sep, value = arg.partition("=")
            name = name.replace("_", "-")
            if name in _BOOL_FLAGS and sep:
                truth = value.strip().lower()
                if truth not in ("1", "0", "true", "false", "yes", "no"):
                    raise errors.ConfigError(f"{name} takes true or false, got {value!r}.")
                arg = name if truth in ("1", "true", "yes") else "--no-" + name[2:]
            else:
                arg = name + sep + value
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> relabel.RelabelResult:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        config = tyro.cli(relabel.RelabelConfig, args=normalize_flags(args), description=__doc__)
        result = relabel.relabel(config)
    except errors.UserError as e:
        logger.error("%s", e)
        raise SystemExit(2) from None
    print(report.format_table(result.report))
    stats = result.stats
    logger.info(
        "Wrote %s (%s = positive/negative); %d value frames (%d from cache) at %.1f frames/s; report in %s",
        result.output,
        config.adv_col,
        stats["frames_total"],
        stats["frames_cached"],
        stats["frames_per_s"],
        config.resolved_report_dir(),
    )
    return result


if __name__ == "__main__":
    main()
