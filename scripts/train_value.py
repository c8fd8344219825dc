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
EMA and the optimizer state. Load a run with `openpi.training.value_checkpoint.load_value_checkpoint`.

The state norm stats come from the assets dir, like the policy's: run
`scripts/compute_norm_stats.py <config name> --repo-id=<dataset>` first (training refuses without them).
"""

from collections.abc import Sequence

from openpi.shared import cli
from openpi.training import value_train


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(value_train.main, argv, name="openpi.train_value")


if __name__ == "__main__":
    main()
