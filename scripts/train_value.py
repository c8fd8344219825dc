"""Train the RECAP value model (stage 4 of the loop) from a named config.

    uv run scripts/train_value.py <config name> --data_dir=<LeRobot dataset> [--checkpoint_dir=D] [flags]
    uv run scripts/train_value.py value_demo --data_dir=./demo_output/data/yam_synthetic --tokenizer_path=<spm>

Flags of the community value trainer work as they did there (underscores or dashes): --data_dir
--checkpoint_dir --batch_size --num_train_steps --log_interval --save_interval --val_interval
--load_pretrained/--no-load-pretrained --tokenizer_path --freeze_mode {all_backbones,siglip_only,none}
--peak_lr --use_ema/--no-use-ema --wandb_mode --resume (and --overwrite, --siglip_path, --gemma3_path).

Multi-GPU / multi-host runs take the same distributed flags as scripts/train.py (before the config name) and
run on the same mesh / FSDP / data-loader code. The run directory holds value_model.json (cameras, prompt
format: what the labeller checks), the frozen backbones once, and per step only the trainable weights, their
EMA and the optimizer state. Load a run with `openpi.training.value_train.load_value_checkpoint`.
"""

from collections.abc import Sequence
import importlib.util
import logging
import pathlib
import sys

from openpi.shared import errors
from openpi.training import value_config
from openpi.training import value_train

logger = logging.getLogger("openpi.train_value")


def _train_script():
    """scripts/train.py, for its distributed start-up (one implementation for both trainers)."""
    path = pathlib.Path(__file__).with_name("train.py")
    spec = importlib.util.spec_from_file_location("openpi_train_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    train_script = _train_script()
    args, dist = train_script.pop_distributed_flags(sys.argv[1:] if argv is None else argv)
    try:
        train_script.maybe_initialize_distributed(dist)
        config = value_config.cli(args)
        result = value_train.train(config, make_metrics_logger=train_script._Wandb)
        if result.val_history:
            logger.info("Final validation: %s", result.val_history[-1])
        logger.info("Value checkpoint: %s", config.checkpoint_dir)
    except errors.UserError as e:
        logger.error("%s", e)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
