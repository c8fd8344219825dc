"""Named value-model training configurations (`ValueTrainConfig`), like `TrainConfig` for policies.

    scripts/train_value.py <config name> [--data_dir D] [--checkpoint_dir C] [--freeze_mode M] [...]

The name picks a registered config; the flags that users of the community value trainer know are applied on top
(see `ValueOverrides`), spelled as every script's flags are (`openpi.shared.cli`). Dataset paths and weight files that only exist on a user's cluster are placeholders here.
"""

from collections.abc import Sequence
import dataclasses
import math
import pathlib
import sys
from typing import Literal

import tyro

from openpi import transforms as _transforms
from openpi.models import value_model as _value_model
from openpi.policies import sim_policy
from openpi.policies import yam_policy
from openpi.shared import errors
from openpi.shared import normalize as _normalize
from openpi.shared import registry as _registry
from openpi.training import config as _config
from openpi.training import optimizer as _optimizer

# Placeholders for what lives on the user's cluster; override with --data_dir.
YAM_VIAL_VALUE_REPO_ID = _config.YAM_VIAL_REPO_ID

Backbone = Literal["siglip", "gemma3"]
BACKBONES: tuple[str, ...] = ("siglip", "gemma3")


def _yam_inputs(model: _value_model.ValueModelConfig, cameras) -> _transforms.DataTransformFn:
    del model, cameras
    return yam_policy.YamInputs()


def _sim_inputs(model: _value_model.ValueModelConfig, cameras) -> _transforms.DataTransformFn:
    # A sim dataset without cameras (MetaWorld from state) feeds the value model's camera slots masked black images:
    # the value model always has a vision tower, and the state reaches it as a token (`state_dim`) or in the prompt.
    return sim_policy.SimInputs(tuple(model.cameras), state_only=not cameras)


# The robot input transforms a value data config can name (the ones the policy data configs use). A name, not
# the transform itself, because value checkpoints record it and the labeller rebuilds the same chain from it.
ROBOT_TRANSFORMS = {"yam": _yam_inputs, "sim": _sim_inputs}
ROBOTS = tuple(ROBOT_TRANSFORMS)


@dataclasses.dataclass(frozen=True)
class ValueDataConfig:
    """Which LeRobot dataset, which of its columns, and how frames become value-model inputs.

    Frames go through the policy's transform chain: repack (dataset columns -> robot keys), the robot transform
    (YAM/ALOHA layout -> `image`/`image_mask`/`state`), normalisation of the state, then the value model's own
    tokenisation. Cameras not listed in `cameras` arrive black with mask False and are ignored by the model.
    """

    repo_id: str | None = YAM_VIAL_VALUE_REPO_ID
    # Robot camera name (ALOHA layout) -> dataset column. Only these are read from disk.
    cameras: tuple[tuple[str, str], ...] = tuple(yam_policy.DATASET_CAMERAS.items())
    state_key: str = "observation.state"
    # Target column; datasets written by older tools spell it `value_lable`, which is accepted.
    value_column: str = "value_label"
    # Use the dataset's task text as the prompt; `default_prompt` fills in frames without one.
    prompt_from_task: bool = True
    default_prompt: str | None = None
    # Held-out episodes for validation: this fraction of the episodes, drawn with `split_seed` (at least one).
    val_fraction: float = 0.1
    split_seed: int = 0
    # Train-time image augmentation (openpi's crop/rotate/colour jitter).
    augment: bool = True
    # The robot transform that turns repacked frames into model inputs, as in the policy's data config:
    # "yam" (ALOHA layout, 14-dim state) or "sim" (openpi.sim datasets: camera names top/wrist, a small state).
    robot: str = "yam"
    # Where the state norm stats live (`scripts/compute_norm_stats.py <value config>` writes them); the asset id
    # defaults to `value_<dataset folder name>`, apart from the policy stats of the same dataset.
    assets: _config.AssetsConfig = dataclasses.field(default_factory=_config.AssetsConfig)

    def __post_init__(self):
        if not 0.0 <= self.val_fraction < 1.0:
            raise errors.ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}.")
        if not self.cameras and self.robot != "sim":
            raise errors.ConfigError("ValueDataConfig.cameras is empty; list at least the head camera.")
        if self.robot not in ROBOTS:
            raise errors.ConfigError(f"ValueDataConfig.robot {self.robot!r} is not one of {ROBOTS}.")

    def robot_inputs(self, model: _value_model.ValueModelConfig) -> _transforms.DataTransformFn:
        """The robot transform (dataset layout -> `image` / `image_mask` / `state`), as in the policy's chain."""
        return ROBOT_TRANSFORMS[self.robot](model, self.cameras)

    def resolved_asset_id(self) -> str | None:
        if self.assets.asset_id is not None:
            return self.assets.asset_id
        return None if self.repo_id is None else f"value_{pathlib.Path(self.repo_id).name}"

    def load_norm_stats(self, assets_dirs: pathlib.Path) -> dict[str, _normalize.NormStats] | None:
        """The state stats, looked up exactly as the policy's (`AssetsConfig.load_norm_stats`)."""
        assets = dataclasses.replace(self.assets, asset_id=self.resolved_asset_id())
        return assets.load_norm_stats(assets_dirs, self.repo_id)

    def norm_stats_dirs(self, assets_dirs: pathlib.Path) -> list[pathlib.Path]:
        assets = dataclasses.replace(self.assets, asset_id=self.resolved_asset_id())
        return assets.norm_stats_dirs(assets_dirs, self.repo_id)


@dataclasses.dataclass(frozen=True)
class ValueTrainConfig:
    """One named value-model training run."""

    name: tyro.conf.Suppress[str]
    exp_name: str = "value"
    project_name: str = "openpi_value"
    model: _value_model.ValueModelConfig = dataclasses.field(default_factory=_value_model.ValueModelConfig)
    data: ValueDataConfig = dataclasses.field(default_factory=ValueDataConfig)
    # Pretrained backbones: SigLIP (openpi params with PaliGemma/img, or a big_vision .npz) and Gemma3 (Orbax).
    # None falls back to $OPENPI_VALUE_SIGLIP_PATH / $OPENPI_VALUE_GEMMA3_PATH, then openpi's cache locations.
    load_pretrained: bool = True
    siglip_path: str | None = None
    gemma3_path: str | None = None
    tokenizer_path: str | None = None
    # Which backbones `load_pretrained` loads. The sim value models load only SigLIP: their Gemma3 is a toy with no
    # release, and their "pi05_base" is the BC policy of iteration 0, whose `PaliGemma/img` they start from.
    pretrained_backbones: tuple[Backbone, ...] = ("siglip", "gemma3")
    # SigLIP's learning rate as a multiple of the schedule's (img/head, the new projection, keeps the full rate).
    # Below 1 a pretrained tower adapts without forgetting what it was pretrained on; to freeze it instead use
    # model.freeze_mode "siglip_only". 1.0 leaves the optimizer exactly as before (same state, same checkpoints).
    siglip_lr_scale: float = 1.0
    # The categorical target of the loss: "two_hot" (the C51 projection of the label onto its two neighbouring bins)
    # or "hl_gauss" (a Gaussian of `hl_gauss_sigma` bin widths around it, spread over the bins). A training choice
    # only: inference reads the expectation over bins either way, so checkpoints do not record it.
    value_target: _value_model.ValueTarget = "two_hot"
    hl_gauss_sigma: float = 0.75
    lr_schedule: _optimizer.CosineDecaySchedule = dataclasses.field(
        default_factory=lambda: _optimizer.CosineDecaySchedule(
            warmup_steps=500, peak_lr=1e-4, decay_steps=20_000, decay_lr=1e-5
        )
    )
    optimizer: _optimizer.AdamW = dataclasses.field(default_factory=_optimizer.AdamW)
    # EMA of the trainable weights (what `load_value_checkpoint(use_ema=True)` returns); None turns it off.
    ema_decay: float | None = 0.999
    assets_base_dir: str = "./assets"
    """State norm stats are read from <assets_base_dir>/<config name>/<asset_id> (or <assets_base_dir>/<asset_id>)."""
    checkpoint_base_dir: str = "./checkpoints"
    # Explicit run directory (the community tool's --checkpoint_dir); default <base>/<name>/<exp_name>.
    checkpoint_dir_override: str | None = None
    seed: int = 42
    batch_size: int = 32
    num_workers: int = 2
    num_train_steps: int = 20_000
    # Steps that scale with the data: when set, the run trains ceil(epochs x training frames / batch_size) steps
    # (the training frames are those of the episodes outside the validation split), the schedule's decay is
    # stretched to them (warm-up at most a tenth), and `num_train_steps` is not used. A fixed step count learns
    # less per frame as the data grows: the sim value model got worse on more data at 800 steps.
    num_train_epochs: float | None = None
    # With `num_train_epochs`: validate every this many epochs instead of every `val_interval` steps.
    val_every_epochs: float | None = None
    # Keep the weights of the validation with the lowest held-out cross-entropy instead of the last ones: when
    # training ends, that state becomes the run's final checkpoint (the labeller reads the latest step) and the
    # steps saved after it are deleted; `early_stopping.json` in the run directory records the step chosen. Needs
    # validation episodes (data.val_fraction > 0) and one process (the best state is kept in host memory); a resumed
    # run chooses among the validations after the resume.
    early_stopping: bool = False
    log_interval: int = 100
    save_interval: int = 1000
    keep_period: int | None = 5000
    val_interval: int = 500
    # Validation frames per evaluation (a fixed, evenly spaced subset of the held-out frames); 0 = all.
    val_max_frames: int = 1024
    overwrite: bool = False
    resume: bool = False
    wandb_mode: str = "disabled"
    fsdp_devices: int = 1

    def __post_init__(self):
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise errors.ConfigError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}.")
        if self.wandb_mode not in ("online", "offline", "disabled"):
            raise errors.ConfigError(f"wandb_mode must be online, offline or disabled, got {self.wandb_mode!r}.")
        for field in ("batch_size", "num_train_steps", "log_interval", "save_interval", "val_interval"):
            if getattr(self, field) < 1:
                raise errors.ConfigError(f"{field} must be >= 1, got {getattr(self, field)}.")
        for field in ("num_train_epochs", "val_every_epochs"):
            if getattr(self, field) is not None and not getattr(self, field) > 0:
                raise errors.ConfigError(f"{field} must be > 0 or None, got {getattr(self, field)}.")
        if self.val_every_epochs is not None and self.num_train_epochs is None:
            raise errors.ConfigError("val_every_epochs needs num_train_epochs; set both or use val_interval.")
        unknown = sorted(set(self.pretrained_backbones) - set(BACKBONES))
        if unknown:
            raise errors.ConfigError(f"pretrained_backbones {unknown} are not among {BACKBONES}.")
        if not self.siglip_lr_scale > 0:
            raise errors.ConfigError(
                f"siglip_lr_scale must be > 0, got {self.siglip_lr_scale}; freeze SigLIP with freeze_mode siglip_only."
            )
        if self.value_target not in _value_model.VALUE_TARGETS:
            raise errors.ConfigError(f"value_target {self.value_target!r} is not one of {_value_model.VALUE_TARGETS}.")
        if not self.hl_gauss_sigma > 0:
            raise errors.ConfigError(f"hl_gauss_sigma must be > 0 bin widths, got {self.hl_gauss_sigma}.")
        if self.early_stopping and self.data.val_fraction <= 0:
            raise errors.ConfigError("early_stopping needs validation episodes; set data.val_fraction > 0.")

    def for_training_frames(self, num_frames: int) -> "ValueTrainConfig":
        """This config with its step counts resolved for `num_frames` training frames: unchanged without
        `num_train_epochs`; with it, the steps, the validation interval and the schedule follow the epochs."""
        if self.num_train_epochs is None:
            return self
        if num_frames < 1:
            raise errors.DatasetError("The value run has no training frames; check the dataset and val_fraction.")
        per_epoch = num_frames / self.batch_size
        steps = max(1, math.ceil(self.num_train_epochs * per_epoch))
        val_interval = self.val_interval
        if self.val_every_epochs is not None:
            val_interval = max(1, round(self.val_every_epochs * per_epoch))
        schedule = dataclasses.replace(
            self.lr_schedule, warmup_steps=min(self.lr_schedule.warmup_steps, max(1, steps // 10)), decay_steps=steps
        )
        return dataclasses.replace(
            self,
            num_train_steps=steps,
            val_interval=min(val_interval, steps),
            save_interval=min(self.save_interval, steps),
            lr_schedule=schedule,
        )

    @property
    def wandb_enabled(self) -> bool:
        return self.wandb_mode != "disabled"

    @property
    def assets_dirs(self) -> pathlib.Path:
        return (pathlib.Path(self.assets_base_dir) / self.name).resolve()

    @property
    def checkpoint_dir(self) -> pathlib.Path:
        if self.checkpoint_dir_override:
            return pathlib.Path(self.checkpoint_dir_override).expanduser().resolve()
        return (pathlib.Path(self.checkpoint_base_dir) / self.name / self.exp_name).resolve()


# ------------------------------------------------------------------------------------------------- registry

# Toy sizes: SigLIP "mu/16" at 64 px (16 tokens per camera) and the dummy Gemma3 (width 64, 6 layers). Mean
# readout: at this size it generalises to held-out episodes better than the last token (Spearman 0.92 vs < 0.8).
_TINY_MODEL = _value_model.ValueModelConfig(
    siglip_variant="mu/16",
    gemma3_variant="dummy",
    image_resolution=(64, 64),
    max_token_len=16,
    dtype="float32",
    freeze_mode="none",
    readout="mean",
)


def _sim_value(
    name: str, repo_id: str, *, cameras, model: _value_model.ValueModelConfig, toy: dict, **fields
) -> ValueTrainConfig:
    """A value model for an `openpi.sim` env: one camera slot (SigLIP mu/8, the sim policy's tower), 800 steps on
    CPU; `fields` override the toy settings (e.g. the pretrained vision)."""
    settings = {k: v for k, v in toy.items() if k != "model"}
    settings.update(fields)
    return ValueTrainConfig(
        name=name,
        exp_name=name.removeprefix("value_"),
        model=dataclasses.replace(model, siglip_variant="mu/8", cameras=("base_0_rgb",)),
        data=ValueDataConfig(repo_id=repo_id, cameras=cameras, robot="sim", augment=False, val_fraction=0.1),
        num_train_steps=800,
        log_interval=50,
        save_interval=800,
        val_interval=400,
        val_max_frames=512,
        lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=20, peak_lr=3e-3, decay_steps=800, decay_lr=1e-4),
        **settings,
    )


def _configs() -> list[ValueTrainConfig]:
    toy = {
        "model": _TINY_MODEL,
        "load_pretrained": False,
        "ema_decay": 0.98,
        "batch_size": 32,
        "num_workers": 2,
        "keep_period": None,
        "wandb_mode": "disabled",
    }
    demo_data = ValueDataConfig(repo_id=_config.DEMO_DATASET, augment=False, val_fraction=0.2)
    return [
        # Smoke test: a handful of steps on the synthetic dataset, CPU-friendly.
        ValueTrainConfig(
            name="value_debug",
            exp_name="debug",
            data=demo_data,
            num_train_steps=10,
            log_interval=1,
            save_interval=5,
            val_interval=5,
            val_max_frames=64,
            overwrite=True,
            lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=2, peak_lr=1e-3, decay_steps=100, decay_lr=1e-4),
            **{**toy, "batch_size": 8},
        ),
        # Stage 4 of the offline demo: learns the synthetic dataset's value_label in a few minutes on CPU.
        ValueTrainConfig(
            name="value_demo",
            exp_name="demo",
            data=demo_data,
            num_train_steps=300,
            log_interval=20,
            save_interval=100,
            val_interval=100,
            val_max_frames=256,
            lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=20, peak_lr=3e-3, decay_steps=300, decay_lr=1e-4),
            **toy,
        ),
        # The simulated tabletop (openpi.sim): one 32 px camera, SigLIP mu/8, the dummy Gemma3.
        _sim_value(
            "value_sim",
            _config.SIM_DATASET,
            cameras=(("top", "observation.images.top"),),
            # 800 steps and the state in the prompt (as the policy has it); SigLIP from the BC policy and HL-Gauss
            # targets, the best row of benchmarks/sim_value_sweep.py (validation layouts only): held-out Spearman vs
            # return 0.43 corrected / 0.32 uncorrected (ceilings 0.66 / 0.44), against 0.36 / 0.23 from scratch,
            # 0.41 / 0.29 with SigLIP at a tenth of the rate, 0.29 / 0.25 frozen, and 0.02 / -0.03 warm with two-hot
            # targets at the full rate (benchmarks/results/sim_value_sweep.json). Early stopping on the run's own
            # held-out CE kept step 126 of 1,263 and ranked nothing (-0.04): not used.
            model=dataclasses.replace(
                _TINY_MODEL, image_resolution=(32, 32), prompt_format="task_state", max_token_len=32
            ),
            toy=toy,
            # Pretrained vision, as the real value model has: the SigLIP of the iteration-0 BC policy (the sim's
            # pi05_base), through the loader pi05_base users take; pass --siglip-path=<bc run>/<step>/params
            # (openpi.sim.experiment does). Gemma3 is the dummy one and has no release to load.
            load_pretrained=True,
            pretrained_backbones=("siglip",),
            value_target="hl_gauss",
        ),
        # MetaWorld from state (openpi.sim.metaworld_env): no camera; the 39-dim state is one continuous token
        # (`state_dim`, as the pi0 policy reads it) and the prompt is the task alone: ~24 tokens in all instead of
        # the ~190 of the state spelled in prompt bins (`task_state`: 1.2 steps/s, 651 s per value model; now ~22
        # steps/s, ~50 s). HL-Gauss targets at 800 steps, the best row of benchmarks/sim_value_sweep.py --env
        # metaworld (push-v3's iteration-0 data, validation layouts only): held-out Spearman vs return 0.43 / 0.35
        # (progress ceilings 0.41 / 0.34); two-hot 0.42 / 0.33, the last-token readout 0.42 / 0.33, 8 epochs
        # 0.31 / 0.19 (it memorises).
        _sim_value(
            "value_sim_metaworld",
            _config.SIM_DATASET_METAWORLD,
            cameras=(),
            model=dataclasses.replace(
                _TINY_MODEL, image_resolution=(8, 8), prompt_format="task", max_token_len=24, state_dim=39
            ),
            toy=toy,
            value_target="hl_gauss",
        ),
        # The community setup: SigLIP So400m/14 + Gemma3-270M, three YAM cameras, backbones frozen.
        ValueTrainConfig(
            name="value_yam_vial_30fps",
            model=_value_model.ValueModelConfig(prompt_format="task", max_token_len=48, freeze_mode="all_backbones"),
            data=ValueDataConfig(repo_id=YAM_VIAL_VALUE_REPO_ID, default_prompt=_config.YAM_VIAL_PROMPT),
            batch_size=32,
        ),
    ]


_CONFIGS_DICT = _registry.build(_configs(), "ValueTrainConfig")


def config_names() -> list[str]:
    return list(_CONFIGS_DICT)


def get_config(name: str) -> ValueTrainConfig:
    """The registered config `name`; an unknown name suggests the closest ones."""
    return _registry.lookup(_CONFIGS_DICT, name, "value config")


# ---------------------------------------------------------------------------------------------------- CLI


@dataclasses.dataclass(frozen=True)
class ValueOverrides:
    """Flags of the community value trainer; each one left unset keeps the named config's value."""

    data_dir: str | None = None
    """LeRobot dataset root (or <org>/<name> under $HF_LEROBOT_HOME)."""
    checkpoint_dir: str | None = None
    """Run directory (default ./checkpoints/<config>/<exp_name>)."""
    assets_base_dir: str | None = None
    """Where the state norm stats are read (scripts/compute_norm_stats.py <config> writes them)."""
    exp_name: str | None = None
    batch_size: int | None = None
    num_train_steps: int | None = None
    log_interval: int | None = None
    save_interval: int | None = None
    val_interval: int | None = None
    load_pretrained: bool | None = None
    """Load SigLIP and Gemma3 weights (--no-load-pretrained trains from scratch)."""
    siglip_path: str | None = None
    gemma3_path: str | None = None
    tokenizer_path: str | None = None
    """Gemma3 SentencePiece model (default: <$OPENPI_DATA_HOME>/gemma3/tokenizer.model)."""
    freeze_mode: _value_model.FreezeMode | None = None
    siglip_lr_scale: float | None = None
    """SigLIP's learning rate as a multiple of the schedule's (e.g. 0.1 for a pretrained tower)."""
    num_train_epochs: float | None = None
    """Train this many epochs of the training frames instead of --num_train_steps."""
    early_stopping: bool | None = None
    """Keep the step with the lowest validation cross-entropy as the final checkpoint."""
    value_target: _value_model.ValueTarget | None = None
    peak_lr: float | None = None
    use_ema: bool | None = None
    wandb_mode: str | None = None
    resume: bool = False
    overwrite: bool = False
    seed: int | None = None
    num_workers: int | None = None
    fsdp_devices: int | None = None

    def apply(self, config: ValueTrainConfig) -> ValueTrainConfig:
        changes: dict = {}
        if self.data_dir is not None:
            changes["data"] = dataclasses.replace(config.data, repo_id=self.data_dir)
        if self.checkpoint_dir is not None:
            changes["checkpoint_dir_override"] = self.checkpoint_dir
        for field in ("exp_name", "assets_base_dir", "batch_size", "num_train_steps", "log_interval", "save_interval", "val_interval",
                      "load_pretrained", "siglip_path", "gemma3_path", "tokenizer_path", "wandb_mode", "seed",
                      "num_workers", "fsdp_devices", "siglip_lr_scale", "num_train_epochs", "early_stopping",
                      "value_target"):  # fmt: skip
            value = getattr(self, field)
            if value is not None:
                changes[field] = value
        if self.num_train_steps is not None and self.num_train_epochs is None:
            changes["num_train_epochs"] = None  # an explicit step count wins over the config's epochs
            changes["val_every_epochs"] = None
        if self.freeze_mode is not None:
            changes["model"] = dataclasses.replace(config.model, freeze_mode=self.freeze_mode)
        if self.peak_lr is not None:
            changes["lr_schedule"] = dataclasses.replace(config.lr_schedule, peak_lr=self.peak_lr)
        if self.use_ema is not None:
            changes["ema_decay"] = (config.ema_decay or 0.999) if self.use_ema else None
        if self.resume:
            changes.update(resume=True, overwrite=False)
        elif self.overwrite:
            changes.update(overwrite=True, resume=False)
        return dataclasses.replace(config, **changes)


def cli(args: Sequence[str] | None = None) -> ValueTrainConfig:
    """`<config name> [--flag=value ...]` -> ValueTrainConfig; flags are `ValueOverrides`, spelled either way
    (`--batch_size=4`, `--batch-size 4`, `--no-use-ema`, `--use_ema=false`) by the shared `openpi.shared.cli`."""
    from openpi.shared import cli as _cli

    args = list(sys.argv[1:] if args is None else args)
    prog = pathlib.Path(sys.argv[0]).name
    name, config, rest = _cli.split_name(
        _CONFIGS_DICT, args, kind="value config", prog=prog, description="Train the RECAP value model."
    )
    overrides = _cli.parse(ValueOverrides, rest, prog=f"{prog} {name}", description=f"Train the value model {name!r}.")
    return overrides.apply(config)
