"""What one relabelling run needs (`RelabelConfig`) and the registered relabel configs.

A registered config fixes what belongs to a setup rather than to one run: which value training run's checkpoint
it uses by default (`value_config`: the layout `checkpoints/<value config>/<exp name>` of scripts/train_value.py),
the dataset cameras and the advantage lookahead. The run itself adds the dataset and the output:

    label_advantage_from_vlm.py yam_vial --data_dir=<dataset> --output_dir=<new dataset>

The community invocation without a config name (`--data_dir=... --checkpoint_dir=...`) is the `default` config.
"""

import dataclasses
import pathlib

from openpi.recap import advantage as _adv
from openpi.recap import vocab
from openpi.shared import errors
from openpi.shared import registry as _registry

DEFAULT_CONFIG = "default"


@dataclasses.dataclass(frozen=True)
class RelabelConfig:
    """Everything one relabelling run needs (the CLI in scripts/label_advantage_from_vlm.py fills it)."""

    name: str = DEFAULT_CONFIG
    """The registered config this run started from (recorded in the report)."""
    data_dir: str = ""
    """The LeRobot dataset (v2.1 or v3.0) to relabel."""
    checkpoint_dir: str | None = None
    """A value run of scripts/train_value.py (its latest step) or one of its step folders; default: the run of
    `value_config` under ./checkpoints."""
    value_config: str | None = None
    """The value training config whose checkpoint is used when --checkpoint_dir is not given."""
    output_dir: str | None = None
    """Where the relabelled copy is written (the source is never modified)."""
    in_place: bool = False
    """Rewrite the source dataset instead (files replaced atomically: temp + fsync + rename)."""
    overwrite: bool = False
    """Replace an existing --output_dir."""
    tokenizer_path: str | None = None
    """The Gemma3 SentencePiece model the value model was trained with (its sha256 is checked)."""
    batch_size: int = 32
    """Frames per inference batch on each process (split over its local devices when it divides evenly)."""
    lookahead: int = 50
    """N of the N-step advantage."""
    top_percent: float = 30.0
    """Percent of each task's autonomous frames labelled positive."""
    failure_reward: float = _adv.DEFAULT_FAILURE_REWARD
    """Terminal reward of a failed episode whose stored one carries no penalty (community data writes 0)."""
    human_col: str = vocab.INTERVENTION
    """Column that is 1 on human frames (corrections, demonstrations) and 0 on autonomous frames."""
    adv_col: str = vocab.ADV_IND
    """Column the labels are written to."""
    use_ema: bool = True
    """Use the EMA weights (else the raw trained weights)."""
    step: int | None = None
    """Checkpoint step (default: the latest)."""
    cameras: tuple[str, ...] | None = None
    """Dataset camera columns to feed the model; default the checkpoint's. Different cameras are refused."""
    num_workers: int = 2
    """Decoding worker processes per process; each decodes whole episodes front to back, ahead of inference."""
    prefetch: int = 4
    """Decoded chunks (of --batch_size frames) each worker may hold ready before inference takes them."""
    cache_dir: str | None = None
    """Per-episode value cache (default <output>.relabel_cache); a killed run resumes from it. With several hosts
    it must be on storage every host sees."""
    report_dir: str | None = None
    """Report JSON + PNGs (default <output>.relabel_report)."""
    progress: bool = True
    """Print one progress line per process: frames/s, ETA and this process's share of the frames."""

    def validate(self) -> None:
        """Raises ConfigError (one sentence) for a run that cannot start; called before any work is done."""
        if not self.data_dir:
            raise errors.ConfigError("Pass --data_dir, the LeRobot dataset to relabel.")
        if self.checkpoint_dir is None and self.value_config is None:
            raise errors.ConfigError("Pass --checkpoint_dir, the value run written by scripts/train_value.py.")
        if self.in_place and self.output_dir is not None:
            raise errors.ConfigError("Pass either --output_dir (write a new dataset) or --in_place, not both.")
        if not self.in_place and self.output_dir is None:
            raise errors.ConfigError(
                "Pass --output_dir for the relabelled copy (the source is left untouched), or --in_place to "
                "rewrite the source dataset."
            )
        if self.batch_size < 1:
            raise errors.ConfigError(f"--batch_size must be >= 1, got {self.batch_size}.")
        if self.num_workers < 0 or self.prefetch < 1:
            raise errors.ConfigError(
                f"--num_workers must be >= 0 and --prefetch >= 1 (got {self.num_workers}, {self.prefetch})."
            )
        try:
            self.advantage_config()
        except ValueError as e:
            raise errors.ConfigError(str(e)) from e

    def advantage_config(self) -> _adv.AdvantageConfig:
        return _adv.AdvantageConfig(
            lookahead=self.lookahead, top_percent=self.top_percent, failure_reward=self.failure_reward
        )

    def resolved_checkpoint_dir(self) -> pathlib.Path:
        """--checkpoint_dir, else the checkpoint directory of the `value_config` training run."""
        if self.checkpoint_dir is not None:
            return pathlib.Path(self.checkpoint_dir).expanduser()
        from openpi.training import value_config as _value_config

        return pathlib.Path(_value_config.get_config(self.value_config).checkpoint_dir)

    def target(self) -> pathlib.Path:
        return pathlib.Path(self.data_dir if self.in_place else self.output_dir).expanduser().absolute()

    def resolved_cache_dir(self) -> pathlib.Path:
        if self.cache_dir:
            return pathlib.Path(self.cache_dir).expanduser().absolute()
        t = self.target()
        return t.parent / f"{t.name}.relabel_cache"

    def resolved_report_dir(self) -> pathlib.Path:
        if self.report_dir:
            return pathlib.Path(self.report_dir).expanduser().absolute()
        t = self.target()
        return t.parent / f"{t.name}.relabel_report"


# The YAM dataset's three cameras (yam_policy.DATASET_CAMERAS), in the order the community value model reads them.
_YAM_CAMERAS = (
    "observation.images.head_camera",
    "observation.images.left_wrist_camera",
    "observation.images.right_wrist_camera",
)


def _configs() -> list[RelabelConfig]:
    return [
        # The community labeller's defaults; the cameras are the checkpoint's own.
        RelabelConfig(name=DEFAULT_CONFIG),
        # The community vial setup: the three YAM cameras at 30 fps, N = 50 (~1.7 s ahead).
        RelabelConfig(name="yam_vial", value_config="value_yam_vial_30fps", cameras=_YAM_CAMERAS, lookahead=50),
        # scripts/demo.py's stage 5 on the synthetic YAM data.
        RelabelConfig(name="demo", value_config="value_demo", lookahead=50),
        # Simulated tasks (openpi.sim): short episodes, so a short lookahead (the experiment's default).
        RelabelConfig(name="sim", lookahead=10),
    ]


CONFIGS: dict[str, RelabelConfig] = _registry.build(_configs(), "relabel config")


def get_config(name: str) -> RelabelConfig:
    """The registered relabel config `name`; an unknown name suggests the nearest ones."""
    return _registry.lookup(CONFIGS, name, "relabel config")
