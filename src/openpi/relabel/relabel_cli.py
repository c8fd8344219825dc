"""The relabelling command line (scripts/label_advantage_from_vlm.py is a thin entry point over `main`).

    label_advantage_from_vlm.py [--coordinator-address A --num-processes N --process-id I] <config> [--flags]
    label_advantage_from_vlm.py --data_dir=... --checkpoint_dir=... --output_dir=...    (community: `default`)

Multi-host runs start exactly like training (`openpi.training.distributed`): the same flags, the same environment
variables (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID) and SLURM / TPU-pod auto-detection.
"""

from collections.abc import Sequence
import logging

from openpi.relabel import relabel as _relabel
from openpi.relabel import relabel_config as _config
from openpi.relabel import report as _report
from openpi.shared import cli

logger = logging.getLogger("openpi.label_advantage")

DESCRIPTION = "Relabel adv_ind with a trained value model (RECAP stage 5); see scripts/label_advantage_from_vlm.py."


def parse_args(args: Sequence[str]) -> _config.RelabelConfig:
    """`<config> [flags]`, or only flags (the community spelling) for the `default` config."""
    args = list(args)
    if args and args[0].startswith("--") and args[0] not in ("--help", "-h"):
        default = _config.get_config(_config.DEFAULT_CONFIG)
        return cli.parse(_config.RelabelConfig, args, default=default, description=DESCRIPTION)
    return cli.parse_named(_config.CONFIGS, args, kind="relabel config", description=DESCRIPTION)


def main(args: Sequence[str]) -> _relabel.RelabelResult:
    """Joins the other processes (if launched multi-process), parses the config and relabels."""
    from openpi.training import distributed

    args, dist_env = distributed.pop_distributed_flags(args)
    config = parse_args(args)
    config.validate()
    distributed.maybe_initialize_distributed(dist_env)
    result = _relabel.relabel(config)
    stats = result.stats
    if result.report is None:
        logger.info(
            "Process %d: scored %d frames (%d from cache) at %.1f frames/s; process 0 writes the dataset.",
            stats["process_index"], stats["frames_total"], stats["frames_cached"], stats["frames_per_s"],
        )  # fmt: skip
        return result
    print(_report.format_table(result.report))
    logger.info(
        "Wrote %s (%s = positive/negative); %d value frames (%d from cache) at %.1f frames/s on %d process(es), "
        "%d device(s); report in %s",
        result.output, config.adv_col, stats["frames_total"], stats["frames_cached"], stats["frames_per_s"],
        stats["processes"], stats["devices"], config.resolved_report_dir(),
    )  # fmt: skip
    return result
