"""Named training configurations (`TrainConfig`) and the data configs they build.

A cluster job is `scripts/train.py <config name> --exp-name=x [--overwrite|--resume] [--field=value ...]`:
the name picks a registered `TrainConfig`, tyro applies the overrides. Paths that only exist on a user's
machines (datasets, SFT checkpoints) are fields with placeholders, never hard-coded home directories.
"""

import abc
from collections.abc import Callable
from collections.abc import Sequence
import dataclasses
import logging
import pathlib
import sys
from typing import Any

import tyro

from openpi import transforms as _transforms
from openpi.models import pi0_config
from openpi.models import tokenizer as _tokenizer
from openpi.policies import sim_policy
from openpi.policies import yam_policy
from openpi.recap import vocab
from openpi.shared import errors
from openpi.shared import normalize as _normalize
from openpi.shared import registry as _registry
from openpi.training import optimizer as _optimizer
from openpi.training import weight_loaders

logger = logging.getLogger(__name__)

YAM_VIAL_PROMPT = "pick up the vial and place it in the rack"
# Placeholders for what lives on the user's cluster; override on the command line.
YAM_VIAL_REPO_ID = "local/yam_vial_30fps"
YAM_VIAL_RECAP_REPO_ID = "local/yam_vial_30fps_recap"
YAM_SFT_PARAMS = "./checkpoints/pi05_yam_vial_30fps/sft/29999/params"
PI05_BASE_PARAMS = "gs://openpi-assets/checkpoints/pi05_base/params"
DEMO_DATASET = "./demo_output/data/yam_synthetic"
DEMO_RECAP_DATASET = "./demo_output/data/yam_synthetic_recap"
# The last step demo_pi06 writes with its defaults (300 steps, --exp-name=demo): what demo_pi06_recap starts from.
DEMO_PI06_PARAMS = "./demo_output/checkpoints/demo_pi06/demo/299/params"


@dataclasses.dataclass(frozen=True)
class AssetsConfig:
    """Where norm stats come from: `<assets_dir or the config's assets dir>/<asset_id>/norm_stats.json`.

    The one lookup of norm stats for every trainer (policy data configs and `ValueDataConfig` hold one of these);
    `scripts/compute_norm_stats.py <config name>` writes to the first place looked at.
    """

    assets_dir: str | None = None
    asset_id: str | None = None

    def resolved_asset_id(self, repo_id: str | None) -> str | None:
        """`asset_id`, else the dataset's directory name."""
        if self.asset_id is not None:
            return self.asset_id
        return None if repo_id is None else pathlib.Path(repo_id).name

    def norm_stats_dirs(self, assets_dirs: pathlib.Path, repo_id: str | None) -> list[pathlib.Path]:
        """Where norm stats are looked for: `<assets_dir>/<asset_id>` (openpi: assets_dir is
        `<assets_base_dir>/<config name>`), then `<assets_base_dir>/<asset_id>`."""
        asset_id = self.resolved_asset_id(repo_id)
        if asset_id is None:
            return []
        if self.assets_dir is not None:
            return [pathlib.Path(self.assets_dir) / asset_id]
        assets_dirs = pathlib.Path(assets_dirs)
        return [assets_dirs / asset_id, assets_dirs.parent / asset_id]

    def load_norm_stats(self, assets_dirs: pathlib.Path, repo_id: str | None) -> dict[str, _normalize.NormStats] | None:
        """Norm stats from the assets dirs, or None (with a warning) when not computed yet.

        When both places hold stats and they differ, this refuses rather than picking one: stale stats that
        shadow fresh ones train (or serve) on a silently wrong scale.
        """
        candidates = self.norm_stats_dirs(assets_dirs, repo_id)
        found = [d for d in candidates if (d / _normalize.NORM_STATS_FILENAME).is_file()]
        if found:
            stats = _normalize.load(found[0])
            for other in found[1:]:
                other_stats = _normalize.load(other)
                if stats.keys() != other_stats.keys() or not all(
                    stats[k].allclose(other_stats[k], atol=0) for k in stats
                ):
                    raise errors.ConfigError(
                        f"Norm stats in {found[0]} and {other} differ and the first would shadow the second; delete "
                        "the stale one (scripts/compute_norm_stats.py <config> writes the first)."
                    )
            logger.info("Loading norm stats from %s", found[0])
            return stats
        if candidates:
            logger.warning(
                "No norm stats in %s; run scripts/compute_norm_stats.py first.", [str(c) for c in candidates]
            )
        return None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Everything the data loader and the policy need to turn frames into model inputs."""

    # Dataset: a local root directory or a LeRobot `<org>/<name>` repo id under $HF_LEROBOT_HOME. None = fake data.
    repo_id: str | None = None
    asset_id: str | None = None
    norm_stats: dict[str, _normalize.NormStats] | None = None
    repack_transforms: _transforms.Group = dataclasses.field(default_factory=_transforms.Group)
    data_transforms: _transforms.Group = dataclasses.field(default_factory=_transforms.Group)
    model_transforms: _transforms.Group = dataclasses.field(default_factory=_transforms.Group)
    use_quantile_norm: bool = False
    # Dataset column whose next `action_horizon` frames form the action chunk.
    action_key: str = "action"
    # Copy the frame's task text into `prompt` before repacking.
    prompt_from_task: bool = False
    # Optional per-frame loss weight: weight = 1 + (loss_weight_scale - 1) * column (e.g. intervention -> x2).
    loss_weight_column: str | None = None
    loss_weight_scale: float = 2.0
    # Non-camera columns the dataset must have (checked before compiling).
    required_columns: tuple[str, ...] = ()
    # Random observations from the model's input spec instead of a dataset (openpi's fake data).
    fake_data: bool = False


@dataclasses.dataclass(frozen=True)
class ModelTransformFactory:
    """The model transforms: default prompt, resize to 224, tokenize (with the indicator), pad to action_dim."""

    default_prompt: str | None = None

    def __call__(
        self,
        model_config: pi0_config.Pi0Config,
        *,
        tokenizer_path: str | None = None,
        indicator_dropout: float = 0.0,
        seed: int = 0,
    ) -> _transforms.Group:
        tokenizer = _tokenizer.PaligemmaTokenizer(model_config.max_token_len, tokenizer_path)
        if tokenizer.vocab_size > model_config.vocab_size:
            raise errors.ConfigError(
                f"The tokenizer {tokenizer.model_path} has {tokenizer.vocab_size} pieces but the model embeds only "
                f"{model_config.vocab_size}; raise --model.vocab-size or use a smaller tokenizer."
            )
        return _transforms.Group(
            inputs=[
                _transforms.InjectDefaultPrompt(self.default_prompt),
                _transforms.ResizeImages(*model_config.image_resolution),
                _transforms.TokenizePrompt(
                    tokenizer,
                    discrete_state_input=model_config.discrete_state_input,
                    use_adv_ind=model_config.pistar,
                    indicator_dropout=indicator_dropout if model_config.pistar else 0.0,
                    seed=seed,
                ),
                _transforms.PadStatesAndActions(model_config.action_dim),
            ]
        )


@dataclasses.dataclass(frozen=True)
class DataConfigFactory(abc.ABC):
    """Builds a `DataConfig` for a model; subclasses describe one robot/dataset family."""

    repo_id: str | None = None
    assets: AssetsConfig = dataclasses.field(default_factory=AssetsConfig)

    @abc.abstractmethod
    def create(
        self,
        assets_dirs: pathlib.Path,
        model_config: pi0_config.Pi0Config,
        *,
        tokenizer_path: str | None = None,
        indicator_dropout: float = 0.0,
        seed: int = 0,
    ) -> DataConfig:
        """The data config; `indicator_dropout` > 0 only for training."""

    def warmup_example(self) -> dict | None:
        """An observation as this family's clients send it, for the server's warm-up request (None: no example, so
        the first real request pays for compilation). It lives on the data config because serving sits below the
        simulator in the layers and cannot ask an env what it sends."""
        return None

    def resolved_asset_id(self) -> str | None:
        """`assets.asset_id`, else the dataset's directory name."""
        return self.assets.resolved_asset_id(self.repo_id)

    def norm_stats_dirs(self, assets_dirs: pathlib.Path) -> list[pathlib.Path]:
        return self.assets.norm_stats_dirs(assets_dirs, self.repo_id)

    def load_norm_stats(self, assets_dirs: pathlib.Path) -> dict[str, _normalize.NormStats] | None:
        """The policy's norm stats (None when not computed yet); a file without `state` or `actions` is refused
        (`normalize.check_keys`). Training, the data loader and serving all read the stats through here; value
        configs read their state-only files through `AssetsConfig` directly."""
        stats = self.assets.load_norm_stats(assets_dirs, self.repo_id)
        if stats is not None:
            found = [d for d in self.norm_stats_dirs(assets_dirs) if (d / _normalize.NORM_STATS_FILENAME).is_file()]
            _normalize.check_keys(stats, _normalize.POLICY_KEYS, source=str(found[0] / _normalize.NORM_STATS_FILENAME))
        return stats


def missing_norm_stats_error(what: str, dirs: list[pathlib.Path], command: str) -> errors.ConfigError:
    """The one "no norm stats" message of policy and value runs: what is missing, where it was looked for, and the
    compute_norm_stats command that writes it (`command` is its arguments, e.g. the config name)."""
    where = [str(p) for p in dirs]
    return errors.ConfigError(
        f"No {what} (looked in {where}); run `uv run scripts/compute_norm_stats.py {command}` first."
    )


@dataclasses.dataclass(frozen=True)
class FakeDataConfig(DataConfigFactory):
    """Random inputs shaped like the model's (no dataset, no norm stats): for smoke tests of the trainer."""

    def create(self, assets_dirs, model_config, *, tokenizer_path=None, indicator_dropout=0.0, seed=0) -> DataConfig:
        del assets_dirs, model_config, tokenizer_path, indicator_dropout, seed
        return DataConfig(repo_id=None, asset_id=None, fake_data=True)


@dataclasses.dataclass(frozen=True)
class LeRobotYamDataConfig(DataConfigFactory):
    """A YAM (or ALOHA-layout) LeRobot dataset: 3 cameras, 14-dim state and action, optional RECAP indicator."""

    repo_id: str | None = YAM_VIAL_REPO_ID
    """Dataset: a local root directory or a LeRobot <org>/<name> under $HF_LEROBOT_HOME."""
    default_prompt: str | None = YAM_VIAL_PROMPT
    """Prompt for frames that carry none."""
    prompt_from_task: bool = False
    """Use each frame's task text as the prompt (the community configs use only the default prompt)."""
    use_delta_joint_actions: bool = True
    """Joints as deltas from the current state, grippers absolute."""
    use_adv_ind: bool = True
    """Read the adv_ind column (pi0.6 configs)."""
    loss_weight_column: str | None = None
    """Optional per-frame loss weight: 1 + (scale - 1) * column, e.g. intervention with scale 2 weighs corrections x2."""
    loss_weight_scale: float = 2.0
    action_key: str = "action"
    state_key: str = "observation.state"

    @property
    def delta_action_mask(self) -> tuple[bool, ...] | None:
        """Action dims made relative to the state (read by scripts/compute_norm_stats.py too)."""
        return _transforms.make_bool_mask(6, -1, 6, -1) if self.use_delta_joint_actions else None

    def warmup_example(self) -> dict:
        return yam_policy.make_yam_example()

    def repack_structure(self) -> dict[str, Any]:
        structure: dict[str, Any] = {
            "images": dict(yam_policy.DATASET_CAMERAS),
            "state": self.state_key,
            "actions": self.action_key,
        }
        if self.use_adv_ind:
            structure[vocab.ADV_IND] = vocab.ADV_IND
        if self.prompt_from_task:
            structure["prompt"] = "prompt"
        if self.loss_weight_column is not None:
            structure["loss_weight"] = "loss_weight"
        return structure

    def required_columns(self) -> tuple[str, ...]:
        columns = [self.state_key, self.action_key]
        if self.use_adv_ind:
            columns.append(vocab.ADV_IND)
        if self.loss_weight_column is not None:
            columns.append(self.loss_weight_column)
        return tuple(columns)

    def create(self, assets_dirs, model_config, *, tokenizer_path=None, indicator_dropout=0.0, seed=0) -> DataConfig:
        if self.repo_id is None:
            raise errors.ConfigError("LeRobotYamDataConfig.repo_id is not set; pass --data.repo-id=<dataset root>.")
        data_transforms = _transforms.Group(inputs=[yam_policy.YamInputs()], outputs=[yam_policy.YamOutputs()])
        mask = self.delta_action_mask
        if mask is not None:
            data_transforms = data_transforms.push(
                inputs=[_transforms.DeltaActions(mask)], outputs=[_transforms.AbsoluteActions(mask)]
            )
        model_transforms = ModelTransformFactory(self.default_prompt)(
            model_config, tokenizer_path=tokenizer_path, indicator_dropout=indicator_dropout, seed=seed
        )
        return DataConfig(
            repo_id=self.repo_id,
            asset_id=self.resolved_asset_id(),
            norm_stats=self.load_norm_stats(assets_dirs),
            repack_transforms=_transforms.Group(inputs=[_transforms.RepackTransform(self.repack_structure())]),
            data_transforms=data_transforms,
            model_transforms=model_transforms,
            use_quantile_norm=model_config.pi05,
            action_key=self.action_key,
            prompt_from_task=self.prompt_from_task,
            loss_weight_column=self.loss_weight_column,
            loss_weight_scale=self.loss_weight_scale,
            required_columns=self.required_columns(),
        )


@dataclasses.dataclass(frozen=True)
class LeRobotSimDataConfig(DataConfigFactory):
    """A dataset recorded in `openpi.sim` by `scripts/collect_rollouts.py`: the env's cameras, a small state and
    action, the task text as the prompt, and the RECAP columns for pi0.6 configs."""

    repo_id: str | None = None
    """Dataset root written by scripts/collect_rollouts.py (or its RECAP/relabelled successors)."""
    cameras: tuple[str, ...] = ("top",)
    """Simulator cameras stored in the dataset (observation.images.<camera>); () for state-only envs."""
    action_dim: int = 3
    """The env's action dimension (model outputs are cut back to it)."""
    state_dim: int = 3
    """The env's state dimension (the server's warm-up observation has this state; tests check it against the env)."""
    use_adv_ind: bool = True
    """Read the adv_ind column (pi0.6 configs)."""
    # Read by scripts/compute_norm_stats.py: the columns and (no) delta actions, as for the YAM data config.
    state_key: str = "observation.state"
    action_key: str = "action"
    delta_action_mask: tuple[bool, ...] | None = None

    def warmup_example(self) -> dict:
        return sim_policy.make_sim_example(self.cameras, self.state_dim)

    def create(self, assets_dirs, model_config, *, tokenizer_path=None, indicator_dropout=0.0, seed=0) -> DataConfig:
        if self.repo_id is None:
            raise errors.ConfigError("LeRobotSimDataConfig.repo_id is not set; pass --data.repo-id=<dataset root>.")
        structure: dict[str, Any] = {
            "images": {camera: sim_policy.dataset_camera(camera) for camera in self.cameras},
            "state": self.state_key,
            "actions": self.action_key,
            "prompt": "prompt",
        }
        columns = [self.state_key, self.action_key]
        if self.use_adv_ind:
            structure[vocab.ADV_IND] = vocab.ADV_IND
            columns.append(vocab.ADV_IND)
        model_transforms = ModelTransformFactory(None)(
            model_config, tokenizer_path=tokenizer_path, indicator_dropout=indicator_dropout, seed=seed
        )
        return DataConfig(
            repo_id=self.repo_id,
            asset_id=self.resolved_asset_id(),
            norm_stats=self.load_norm_stats(assets_dirs),
            repack_transforms=_transforms.Group(inputs=[_transforms.RepackTransform(structure)]),
            data_transforms=_transforms.Group(
                inputs=[sim_policy.SimInputs(model_config.image_keys, state_only=not self.cameras)],
                outputs=[sim_policy.SimOutputs(self.action_dim)],
            ),
            model_transforms=model_transforms,
            use_quantile_norm=model_config.pi05,
            prompt_from_task=True,
            required_columns=tuple(columns),
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One named training run; field names and defaults follow openpi's `TrainConfig`."""

    name: tyro.conf.Suppress[str]
    project_name: str = "openpi"
    """wandb project."""
    exp_name: str = tyro.MISSING
    """Run name: checkpoints go to <checkpoint_base_dir>/<config name>/<exp_name>."""
    model: pi0_config.Pi0Config = dataclasses.field(default_factory=pi0_config.Pi0Config)
    weight_loader: weight_loaders.WeightLoader = dataclasses.field(default_factory=weight_loaders.NoOpWeightLoader)
    """Initial weights (e.g. an openpi params checkpoint)."""
    lr_schedule: _optimizer.CosineDecaySchedule = dataclasses.field(default_factory=_optimizer.CosineDecaySchedule)
    optimizer: _optimizer.AdamW = dataclasses.field(default_factory=_optimizer.AdamW)
    ema_decay: float | None = 0.99
    """EMA of the trained weights (saved as params/); None turns it off."""
    freeze_filter: tyro.conf.Suppress[Callable[[str], bool] | None] = None
    data: DataConfigFactory = dataclasses.field(default_factory=FakeDataConfig)
    assets_base_dir: str = "./assets"
    """Norm stats are read from <assets_base_dir>/<config name>/<asset_id> (or <assets_base_dir>/<asset_id>)."""
    checkpoint_base_dir: str = "./checkpoints"
    seed: int = 42
    batch_size: int = 32
    """Global batch size, over all devices and hosts."""
    num_workers: int = 2
    """Data-loading threads per process."""
    frame_cache_gb: float = 0.0
    """Host memory per loader process for frames already read and normalised (0: read every frame every time).
    Pays off when the dataset (decoded) fits: small and simulated datasets are read thousands of times over."""
    num_train_steps: int = 30_000
    log_interval: int = 100
    save_interval: int = 1000
    keep_period: int | None = 5000
    """Keep every checkpoint whose step is a multiple of this (besides the latest)."""
    overwrite: bool = False
    """Delete an existing checkpoint directory of the same name first."""
    resume: bool = False
    """Continue from the latest checkpoint in the directory."""
    wandb_enabled: bool = True
    wandb_mode: str = "online"
    """online, offline or disabled (also disabled when wandb is not installed)."""
    policy_metadata: tyro.conf.Suppress[dict[str, Any] | None] = None
    fsdp_devices: int = 1
    """Devices that share (shard) parameters and optimizer state; must divide the device count."""
    indicator_dropout: float | None = None
    """Probability of dropping the advantage clause per frame; None: the paper's 0.3 for pi0.6 models, else 0
    (`_infer` twins set 0). See `resolved_indicator_dropout`."""
    tokenizer_path: str | None = None
    """PaliGemma SentencePiece model; None = $OPENPI_DATA_HOME/big_vision/paligemma_tokenizer.model."""
    serving_twin_of: tyro.conf.Suppress[str | None] = None
    """Set on `_infer` twins (by `_with_infer_twins`): the training config this one serves. Trainers refuse such a
    config: with indicator dropout 0 the model would never learn the unconditional prompt that CFG needs."""

    def __post_init__(self):
        if self.indicator_dropout is not None and not 0.0 <= self.indicator_dropout <= 1.0:
            raise errors.ConfigError(f"indicator_dropout must be in [0, 1], got {self.indicator_dropout}.")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise errors.ConfigError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}.")

    @property
    def resolved_indicator_dropout(self) -> float:
        """The dropout used in training: the field, else `PAPER_INDICATOR_DROPOUT` for pi0.6 models (so a
        user-written pi0.6 config cannot train without the unconditional prompt that CFG needs), else 0."""
        if self.indicator_dropout is not None:
            return self.indicator_dropout
        return _tokenizer.PAPER_INDICATOR_DROPOUT if self.model.pistar else 0.0

    @property
    def assets_dirs(self) -> pathlib.Path:
        return (pathlib.Path(self.assets_base_dir) / self.name).resolve()

    @property
    def checkpoint_dir(self) -> pathlib.Path:
        if not self.exp_name or self.exp_name is tyro.MISSING:
            raise errors.ConfigError("No experiment name; pass --exp-name=<name>.")
        return (pathlib.Path(self.checkpoint_base_dir) / self.name / self.exp_name).resolve()

    def get_freeze_filter(self) -> Callable[[str], bool]:
        return self.freeze_filter if self.freeze_filter is not None else self.model.get_freeze_filter()

    def create_data_config(self, *, train: bool = True) -> DataConfig:
        """The data config; indicator dropout is applied only when `train`."""
        return self.data.create(
            self.assets_dirs,
            self.model,
            tokenizer_path=self.tokenizer_path,
            indicator_dropout=self.resolved_indicator_dropout if train else 0.0,
            seed=self.seed,
        )


# ------------------------------------------------------------------------------------------------- registry


def _pi06(**kw) -> pi0_config.Pi0Config:
    return pi0_config.Pi0Config(pi05=True, pistar=True, **kw)


# Relabelled datasets keep the frames of the original, so they share its norm stats.
_YAM_ASSETS = AssetsConfig(asset_id="yam_vial_30fps")
_DEMO_ASSETS = AssetsConfig(asset_id="yam_synthetic")
_LORA = {"paligemma_variant": "gemma_2b_lora", "action_expert_variant": "gemma_300m_lora"}
_DUMMY = {"paligemma_variant": "dummy", "action_expert_variant": "dummy", "dtype": "float32"}


def _yam_pi06_configs() -> list[TrainConfig]:
    """The community's five pi06_yam_vial_30fps* configs; `_infer` twins are added by `_with_infer_twins`."""
    base_loader = weight_loaders.CheckpointWeightLoader(PI05_BASE_PARAMS)
    sft_loader = weight_loaders.CheckpointWeightLoader(YAM_SFT_PARAMS)
    data = LeRobotYamDataConfig(repo_id=YAM_VIAL_REPO_ID, assets=_YAM_ASSETS)
    recap = LeRobotYamDataConfig(repo_id=YAM_VIAL_RECAP_REPO_ID, assets=_YAM_ASSETS)
    common = {"num_train_steps": 30_000}
    full = {"model": _pi06(), "batch_size": 56, **common}
    lora = {"model": _pi06(**_LORA), "batch_size": 4, "ema_decay": None, **common}
    return [
        TrainConfig(name="pi06_yam_vial_30fps", weight_loader=base_loader, data=data, **full),
        TrainConfig(name="pi06_yam_vial_30fps_lora", weight_loader=base_loader, data=data, **lora),
        TrainConfig(name="pi06_yam_vial_30fps_lora_from_sft", weight_loader=sft_loader, data=data, **lora),
        TrainConfig(name="pi06_yam_vial_30fps_lora_from_sft_recap", weight_loader=sft_loader, data=recap, **lora),
        TrainConfig(name="pi06_yam_vial_30fps_from_sft_recap", weight_loader=sft_loader, data=recap, **full),
    ]


def _with_infer_twins(configs: Sequence[TrainConfig]) -> list[TrainConfig]:
    """`<name>_infer`: the same config with indicator dropout off (what serving must use), marked as the serving
    twin of `<name>` so that training it is refused (`trainer.preflight`)."""
    out = list(configs)
    for config in configs:
        if config.resolved_indicator_dropout > 0:
            twin = dataclasses.replace(
                config, name=f"{config.name}_infer", indicator_dropout=0.0, serving_twin_of=config.name
            )
            out.append(twin)
    return out


# Toy sizes for the simulated tasks (openpi.sim): dummy Gemma experts, SigLIP mu/8 on one 32 px camera (16 image
# tokens), a 512-piece tokenizer (the 257k-row embedding would be >95 % of the parameters), short prompts and
# chunks, no remat. A CPU train step at batch 32 takes tens of milliseconds (benchmarks/recap_sim_bench.py).
SIM_DATASET = "./sim_output/data/tabletop"
SIM_DATASET_METAWORLD = "./sim_output/data/metaworld"
SIM_TOKENIZER_VOCAB = 512
_SIM_MODEL = {
    "paligemma_variant": "dummy",
    "action_expert_variant": "dummy",
    "dtype": "float32",
    "siglip_variant": "mu/8",
    "image_keys": ("base_0_rgb",),
    "image_resolution": (32, 32),
    "vocab_size": SIM_TOKENIZER_VOCAB,
    "action_dim": 8,
    "action_horizon": 10,
    "remat": False,
    "unroll_layers": True,  # same values, ~1.4x faster steps on CPU (benchmarks/sim_step_bench.py)
    "augment_images": False,
}
# MetaWorld from state observations: the one camera slot gets a masked black 8 px image (a single SigLIP token),
# as openpi does for a robot without some camera; the state reaches the model through the pi0.5 prompt.
_SIM_STATE_ONLY = {**_SIM_MODEL, "image_resolution": (8, 8), "action_dim": 40}  # the 39-dim state fits
# Prompt budgets (pi0.5; pi0.6 adds PISTAR_EXTRA_TOKENS): the tabletop prompt with its 3 state bins is ~30 tokens
# with the 512-piece tokenizer, MetaWorld's 39 state bins ~170. Every unused slot still costs attention and MLP.
_SIM_PROMPT_TOKENS = {"": 36, "_metaworld": 180}
# MetaWorld on pi0: the 39 values reach the action expert through pi0's continuous state projection (one token)
# instead of ~170 prompt bins whose embeddings must be learned from scratch; the prompt is the task alone (<= 19
# tokens for every MetaWorld task, <= 23 with the advantage clause).
_SIM_PI0_STATE_ONLY = {**_SIM_STATE_ONLY, "pi05": False, "max_token_len": 20}


def _sim_configs() -> list[TrainConfig]:
    """BC (pi0.5) and RECAP (pi0.6) on a simulated dataset; the experiment overrides repo_id and steps per arm."""
    steps = 1500
    common = {
        "batch_size": 32,
        "num_train_steps": steps,
        "log_interval": 100,
        "save_interval": steps,
        "keep_period": None,
        "num_workers": 2,
        "frame_cache_gb": 2.0,
        "wandb_enabled": False,
        "ema_decay": None,
        "lr_schedule": _optimizer.CosineDecaySchedule(warmup_steps=50, peak_lr=1e-3, decay_steps=steps, decay_lr=5e-5),
    }
    out = []
    metaworld = LeRobotSimDataConfig(repo_id=SIM_DATASET_METAWORLD, cameras=(), action_dim=4, state_dim=39)
    for suffix, model, data in (
        ("", _SIM_MODEL, LeRobotSimDataConfig(repo_id=SIM_DATASET)),
        ("_metaworld", _SIM_STATE_ONLY, metaworld),
    ):
        out.append(
            TrainConfig(
                name=f"sim_pi05{suffix}",
                model=pi0_config.Pi0Config(pi05=True, max_token_len=_SIM_PROMPT_TOKENS[suffix], **model),
                data=dataclasses.replace(data, use_adv_ind=False),
                **common,
            )
        )
        out.extend(
            _with_infer_twins(
                [
                    TrainConfig(
                        name=f"sim_pi06{suffix}",
                        model=_pi06(max_token_len=_SIM_PROMPT_TOKENS[suffix] + pi0_config.PISTAR_EXTRA_TOKENS, **model),
                        data=data,
                        indicator_dropout=0.3,
                        **common,
                    )
                ]
            )
        )
    # RECAP on pi0 (Pi0Config(pistar=True) without pi05): the same model and prompt, plus the advantage clause.
    recap_pi0 = _SIM_PI0_STATE_ONLY | {
        "max_token_len": _SIM_PI0_STATE_ONLY["max_token_len"] + pi0_config.PISTAR_EXTRA_TOKENS
    }
    out.append(
        TrainConfig(
            name="sim_pi0_metaworld",
            model=pi0_config.Pi0Config(**_SIM_PI0_STATE_ONLY),
            data=dataclasses.replace(metaworld, use_adv_ind=False),
            **common,
        )
    )
    out.extend(
        _with_infer_twins(
            [
                TrainConfig(
                    name="sim_pi0_recap_metaworld",
                    model=pi0_config.Pi0Config(pistar=True, **recap_pi0),
                    data=metaworld,
                    indicator_dropout=0.3,
                    **common,
                )
            ]
        )
    )
    return out


def _configs() -> list[TrainConfig]:
    base_loader = weight_loaders.CheckpointWeightLoader("gs://openpi-assets/checkpoints/pi05_base/params")
    sft_data = LeRobotYamDataConfig(repo_id=YAM_VIAL_REPO_ID, use_adv_ind=False, assets=_YAM_ASSETS)
    demo = {
        "model": _pi06(**_DUMMY),
        "batch_size": 8,
        "num_train_steps": 300,
        "log_interval": 20,
        "save_interval": 100,
        "keep_period": None,
        "num_workers": 2,
        "wandb_enabled": False,
        "lr_schedule": _optimizer.CosineDecaySchedule(warmup_steps=20, peak_lr=1e-3, decay_steps=300, decay_lr=1e-4),
        "ema_decay": None,
    }
    demo_data = LeRobotYamDataConfig(
        repo_id=DEMO_DATASET, prompt_from_task=True, default_prompt=None, assets=_DEMO_ASSETS
    )
    return [
        # openpi-style smoke test: dummy pi0 on random inputs, no dataset, no tokenizer needed.
        TrainConfig(
            name="debug",
            exp_name="debug",
            model=pi0_config.Pi0Config(**_DUMMY),
            data=FakeDataConfig(),
            batch_size=2,
            num_train_steps=10,
            save_interval=5,
            log_interval=1,
            overwrite=True,
            wandb_enabled=False,
            ema_decay=None,
        ),
        # Dummy pi0.6 on a synthetic YAM dataset (tiny SigLIP, dummy Gemma experts); CPU-friendly. Its `_infer`
        # twin serves it (indicator dropout off), like every pi0.6 config.
        *_with_infer_twins([TrainConfig(
            name="debug_pi06",
            exp_name="debug",
            model=_pi06(**_DUMMY),
            data=LeRobotYamDataConfig(repo_id=DEMO_DATASET, prompt_from_task=True, assets=_DEMO_ASSETS),
            batch_size=2,
            num_train_steps=10,
            save_interval=5,
            log_interval=1,
            overwrite=True,
            wandb_enabled=False,
            lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=2, peak_lr=1e-3, decay_steps=100, decay_lr=1e-4),
        )]),
        # Stage 2 of the RECAP loop: plain pi0.5 SFT on the YAM demonstrations.
        TrainConfig(name="pi05_yam_vial_30fps", model=pi0_config.Pi0Config(pi05=True), weight_loader=base_loader,
                    data=sft_data, batch_size=56),
        TrainConfig(name="pi05_yam_vial_30fps_lora", model=pi0_config.Pi0Config(pi05=True, **_LORA),
                    weight_loader=base_loader, data=sft_data, batch_size=4, ema_decay=None),
        *_with_infer_twins(_yam_pi06_configs()),
        # The offline demo (scripts/make_demo_dataset.py writes the dataset): SFT, pi0.6, then pi0.6 on relabels.
        TrainConfig(name="demo_pi05", model=pi0_config.Pi0Config(pi05=True, **_DUMMY),
                    data=dataclasses.replace(demo_data, use_adv_ind=False), **{k: v for k, v in demo.items() if k != "model"}),
        *_with_infer_twins([
            TrainConfig(name="demo_pi06", data=demo_data, **demo),
            # Stage 6 starts from stage 3's weights, as the real `_recap` configs start from a checkpoint
            # (scripts/demo.py passes the step it wrote with --weight-loader.params-path).
            TrainConfig(
                name="demo_pi06_recap",
                data=dataclasses.replace(demo_data, repo_id=DEMO_RECAP_DATASET),
                weight_loader=weight_loaders.CheckpointWeightLoader(DEMO_PI06_PARAMS),
                **demo,
            ),
        ]),
        *_sim_configs(),
    ]  # fmt: skip


_CONFIGS_DICT = _registry.build(_configs(), "TrainConfig")


def config_names() -> list[str]:
    return list(_CONFIGS_DICT)


def get_config(name: str) -> TrainConfig:
    """The registered config `name`; an unknown name suggests the closest ones."""
    return _registry.lookup(_CONFIGS_DICT, name, "training config")


def cli(args: Sequence[str] | None = None) -> TrainConfig:
    """`<config name> [--field=value ...]` -> TrainConfig (the shared convention of `openpi.shared.cli`)."""
    from openpi.shared import cli as _cli

    args = list(sys.argv[1:] if args is None else args)
    return _cli.parse_named(_CONFIGS_DICT, args, kind="training config", description="Train a policy.")
