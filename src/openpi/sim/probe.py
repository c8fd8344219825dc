"""`scripts/probe_policy.py`: how much a policy's action chunk moves when one input changes at a time.

    uv run scripts/probe_policy.py sim_pi06 --checkpoint-dir checkpoints/sim_pi06/it1/1499 \\
        --data-dir sim_output/data/it0 --num-frames 64

For `--num-frames` frames drawn (seeded) from the dataset, the policy is asked once for a baseline chunk with a
fixed sampling noise, then again with exactly one change, the noise held fixed unless the change is the noise:

- ``identity``: the same inputs and noise again (must be 0: the probe's own control);
- ``noise``: the sampling noise redrawn (how much of the chunk is the policy's randomness);
- ``image_swap/<camera>``: one camera's image from a frame of another episode;
- ``image_black/<camera>``: one camera's image all black (its mask still on, as a dead camera would send);
- ``prompt_swap``: another task's prompt from the dataset (configs that read the prompt from the data);
- ``state_noise``: Gaussian noise of ``--state-noise`` standard deviations (the checkpoint's norm stats) on the state;
- ``adv_ind/<value>`` (pi0.6 configs): the indicator flipped from ``--adv-ind`` to each other value.

Each row reports the mean, median and 90th percentile of the L2 change of the unnormalised (env/robot-space)
chunk [H, D] and of its first action. ``reference`` compares the baseline chunk with the dataset's recorded one.
On tabletop sim data (robot_type ``sim_tabletop`` with a ``sim.seed`` column) the layout of each frame is rebuilt
from its seed and the ``ground_truth`` section gives the distance (world units) from the first predicted (x, y)
target to the prompted button's centre, the same for a constant predictor of the mean target, and, with the prompt
swapped, to the swapped prompt's button and to the original one (does the policy follow the prompt?).

The functions below are pure (perturbations, distances, the summary, the table); `probe` runs them on a policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import json
import logging
import pathlib
from typing import Any
from typing import Literal

import numpy as np

from openpi import transforms as _transforms
from openpi.recap import vocab
from openpi.shared import atomic
from openpi.shared import cli as _cli
from openpi.shared import errors
from openpi.shared import progress as _progress

logger = logging.getLogger("openpi.probe_policy")

PROG = "probe_policy.py"
IDENTITY, NOISE, PROMPT_SWAP, STATE_NOISE = "identity", "noise", "prompt_swap", "state_noise"
IMAGE_SWAP, IMAGE_BLACK, ADV_IND = "image_swap", "image_black", vocab.ADV_IND
# The simulated tabletop env that `ground_truth` can rebuild from a frame's seed.
SIM_ROBOT_TYPE = "sim_tabletop"
SIM_SEED_COLUMN = "sim.seed"  # openpi.sim.dataset.SEED (not imported: the probe needs no simulator otherwise)
# The data homes runs keep their own (toy) tokenizers in: `experiment.prepare_run_dir` (the experiment, the gate, the
# sweep) writes `<out>/openpi_data_home`, scripts/demo.py `<out>/openpi_data`.
RUN_DATA_HOMES = ("openpi_data_home", "openpi_data")

DESCRIPTIONS = {
    IDENTITY: "same inputs, same noise (control: must be 0)",
    NOISE: "sampling noise redrawn",
    IMAGE_SWAP: "image from another episode's frame",
    IMAGE_BLACK: "image blacked out",
    PROMPT_SWAP: "another task's prompt",
    STATE_NOISE: "state + Gaussian noise",
    ADV_IND: "indicator flipped",
}


@dataclasses.dataclass(frozen=True)
class ProbeArgs:
    """The probe's own flags; every other flag after the config name is a training-config override."""

    checkpoint_dir: str | None = None
    """Checkpoint step directory (holds params/ and assets/), or a run directory (its latest step is used). Under a
    sim run or demo output (`<out>/openpi_data_home`, `<out>/openpi_data`) it is probed with that run's tokenizer
    unless --tokenizer-path is given."""
    data_dir: str | None = None
    """Dataset to draw frames from (sim or robot); default the config's data.repo_id."""
    num_frames: int = 64
    """Frames drawn from the dataset (without replacement; all of them if it has fewer)."""
    seed: int = 0
    """Seed of the frame draw, the sampling noise and every perturbation."""
    num_steps: int = 10
    """Flow-matching integration steps per request (as served)."""
    state_noise: float = 0.1
    """Standard deviation of the state perturbation, in units of the checkpoint's state std per dimension."""
    adv_ind: Literal["positive", "negative", "none"] = "positive"
    """Indicator of the baseline requests (pi0.6 configs); the adv_ind rows flip it to each other value."""
    cfg_beta: float | None = None
    """Classifier-free guidance strength for pi0.6 (as serve_policy.py); unset: plain conditioning."""
    output: str = "probe_policy.json"
    """Where to write the JSON result."""


# --------------------------------------------------------------------------------------------- perturbations


def _copy(obs: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(obs)
    if "images" in out:
        out["images"] = dict(out["images"])
    return out


def swap_image(obs: Mapping[str, Any], camera: str, other: Mapping[str, Any]) -> dict[str, Any]:
    """`obs` with `camera`'s image taken from the observation `other`."""
    out = _copy(obs)
    out["images"][camera] = np.asarray(other["images"][camera])
    return out


def black_image(obs: Mapping[str, Any], camera: str) -> dict[str, Any]:
    """`obs` with `camera`'s image all zeros (same shape and dtype)."""
    out = _copy(obs)
    out["images"][camera] = np.zeros_like(np.asarray(obs["images"][camera]))
    return out


def with_prompt(obs: Mapping[str, Any], prompt: str) -> dict[str, Any]:
    out = _copy(obs)
    out["prompt"] = prompt
    return out


def with_indicator(obs: Mapping[str, Any], adv_ind: str) -> dict[str, Any]:
    out = _copy(obs)
    out[vocab.ADV_IND] = adv_ind
    return out


def perturb_state(obs: Mapping[str, Any], rng: np.random.Generator, scale: float, std: np.ndarray) -> dict[str, Any]:
    """`obs` with N(0, (scale * std)^2) added to the state, per dimension (`std` cut or zero-padded to fit)."""
    out = _copy(obs)
    state = np.asarray(obs["state"], np.float32)
    sigma = np.zeros(state.shape[-1], np.float32)
    std = np.asarray(std, np.float32).reshape(-1)[: state.shape[-1]]
    sigma[: len(std)] = std
    out["state"] = (state + scale * sigma * rng.standard_normal(state.shape)).astype(np.float32)
    return out


def action_changes(base: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(L2 norm of the whole chunk's change, L2 norm of the first action's change) between two [H, D] chunks."""
    base, other = np.asarray(base, np.float64), np.asarray(other, np.float64)
    if base.shape != other.shape:
        raise ValueError(f"Action chunks differ in shape: {base.shape} vs {other.shape}.")
    return float(np.linalg.norm(other - base)), float(np.linalg.norm(other[0] - base[0]))


def describe(values: Sequence[float]) -> dict[str, float]:
    """mean, median, 90th percentile and max of `values` (finite floats)."""
    arr = np.asarray(values, np.float64)
    return {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "p90": float(np.percentile(arr, 90)),
        "max": float(arr.max()),
    }


def summarize(changes: Mapping[str, Sequence[tuple[float, float]]]) -> list[dict[str, Any]]:
    """Per row name, the statistics of its (chunk, first action) changes, in the given order."""
    rows = []
    for name, pairs in changes.items():
        if not pairs:
            continue
        kind = name.split("/", 1)[0]
        rows.append(
            {
                "name": name,
                "description": DESCRIPTIONS.get(kind, name),
                "n": len(pairs),
                "chunk_l2": describe([c for c, _ in pairs]),
                "first_action_l2": describe([f for _, f in pairs]),
            }
        )
    noise = next((row["chunk_l2"]["mean"] for row in rows if row["name"] == NOISE), None)
    for row in rows:
        # The noise row is the policy's own randomness: the scale the other rows read against.
        row["chunk_l2_vs_noise"] = row["chunk_l2"]["mean"] / noise if noise else None
    return rows


def position_target(action: np.ndarray) -> np.ndarray:
    """The tabletop env's world (x, y) in [0, 1]^2 of a position-mode action (x, y in [-1, 1] = 2 * world - 1),
    clipped to [-1, 1] first as the env clips every action."""
    return (np.clip(np.asarray(action, np.float64)[:2], -1.0, 1.0) + 1.0) / 2.0


def first_target_errors(predicted: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Distances from the predicted first targets [N, 2] to the prompted buttons [N, 2], and those of a constant
    predictor of the mean target (the floor a policy that ignores images and prompt can reach)."""
    predicted, targets = np.asarray(predicted, np.float64), np.asarray(targets, np.float64)
    mean_target = targets.mean(axis=0)
    return {
        "policy": describe(np.linalg.norm(predicted - targets, axis=-1)),
        "mean_target_baseline": describe(np.linalg.norm(mean_target[None] - targets, axis=-1)),
        "mean_target": mean_target.tolist(),
    }


# ------------------------------------------------------------------------------------------------- the table


def _fmt(stats: Mapping[str, float]) -> str:
    return f"{stats['mean']:>9.4g} {stats['median']:>9.4g} {stats['p90']:>9.4g}"


def format_table(result: Mapping[str, Any]) -> str:
    """The printed report: one line per row, the skipped rows with their reasons, and the ground truth."""
    lines = [
        f"Policy probe: {result['config']} at {result['checkpoint_dir']} on {result['data_dir']} "
        f"({result['num_frames']} frames, seed {result['seed']}, baseline adv_ind={result['adv_ind']})",
        "",
        f"{'perturbation':<24} {'chunk L2: mean':>15} {'median':>9} {'p90':>9}   "
        f"{'first action L2: mean':>21} {'median':>9} {'p90':>9} {'/noise':>9}  what changed",
    ]
    for row in result["rows"]:
        c, f, rel = row["chunk_l2"], row["first_action_l2"], row.get("chunk_l2_vs_noise")
        rel_text = f"{rel:>9.3g}" if rel is not None else f"{'-':>9}"
        lines.append(f"{row['name']:<24} {c['mean']:>15.4g} {c['median']:>9.4g} {c['p90']:>9.4g}   "
                     f"{f['mean']:>21.4g} {f['median']:>9.4g} {f['p90']:>9.4g} {rel_text}  {row['description']}")  # fmt: skip
    ref = result["reference"]
    lines.append(
        f"{'(vs dataset chunk)':<24} {ref['chunk_l2']['mean']:>15.4g} {ref['chunk_l2']['median']:>9.4g} "
        f"{ref['chunk_l2']['p90']:>9.4g}   {ref['first_action_l2']['mean']:>21.4g} "
        f"{ref['first_action_l2']['median']:>9.4g} {ref['first_action_l2']['p90']:>9.4g} {'':>9}  "
        "baseline vs recorded actions"
    )
    identity = next((row for row in result["rows"] if row["name"] == IDENTITY), None)
    if identity is not None and identity["chunk_l2"]["max"] > 0:
        lines.append(
            f"WARNING: the identity row is not 0 (max {identity['chunk_l2']['max']:.3g}): the same request with the "
            "same noise gives different actions, so every row includes that jitter."
        )
    for skipped in result["skipped"]:
        lines.append(f"skipped {skipped['name']}: {skipped['reason']}")
    lines.append("")
    gt = result["ground_truth"]
    if gt is None:
        lines.append(f"Ground truth skipped: {result['ground_truth_skipped']}")
    else:
        lines.append(f"Ground truth (tabletop sim, {gt['n']} frames): first-target error in world units "
                     "(mean / median / p90)")  # fmt: skip
        lines.append(f"  {'policy':<44}{_fmt(gt['policy'])}")
        lines.append(f"  {'constant mean-target baseline':<44}{_fmt(gt['mean_target_baseline'])}")
        if "prompt_swap" in gt:
            lines.append(
                f"  {'prompt swapped: to the new prompt button':<44}{_fmt(gt['prompt_swap']['to_new_target'])}"
            )
            lines.append(
                f"  {'prompt swapped: to the original button':<44}{_fmt(gt['prompt_swap']['to_original_target'])}"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- reading frames


def _repack_structure(data_config: Any) -> dict[str, str]:
    """The flat robot-key -> dataset-key map of the config's repack transforms."""
    flat: dict[str, str] = {}
    for transform in data_config.repack_transforms.inputs:
        if not isinstance(transform, _transforms.RepackTransform):
            raise errors.ConfigError(
                f"The probe reads frames through RepackTransforms only; this config's repack has "
                f"{type(transform).__name__}."
            )
        flat.update(_transforms.flatten_dict(transform.structure))
    return flat


@dataclasses.dataclass
class FrameReader:
    """Frame i of a dataset -> (the robot observation a client would send, the recorded action chunk [H, D]).

    Read with the training loader's rule (`data_loader.read_frame`: features, action chunk, task text as the prompt
    when the config reads it), then the config's repack.
    """

    dataset: Any
    data_config: Any
    horizon: int
    adv_ind: str

    def __post_init__(self) -> None:
        structure = _repack_structure(self.data_config)
        self.repack = _transforms.compose(self.data_config.repack_transforms.inputs)
        synthetic = {"prompt", "loss_weight", vocab.ADV_IND}
        extra = [self.data_config.loss_weight_column] if self.data_config.loss_weight_column is not None else []
        self.keys = [k for k in dict.fromkeys([*structure.values(), *extra]) if k not in synthetic]
        self.cameras = [robot.split("/", 1)[1] for robot in structure if robot.startswith("images/")]

    def __call__(self, index: int) -> tuple[dict[str, Any], np.ndarray]:
        from openpi.training import data_loader

        frame = data_loader.read_frame(self.dataset, self.data_config, int(index), self.keys, self.horizon)
        frame.setdefault("loss_weight", np.float32(1.0))
        frame[vocab.ADV_IND] = self.adv_ind  # the probe sets the indicator itself
        obs = self.repack(frame)
        obs.pop("loss_weight", None)
        actions = np.asarray(obs.pop("actions"), np.float32)
        return obs, actions


def check_dataset(dataset: Any, data_config: Any) -> None:
    """The dataset has every camera and column the config reads (the indicator column is not needed: the probe
    sets the indicator itself); one sentence otherwise."""
    from openpi.training import data_loader

    structure = _repack_structure(data_config)
    features = [k for k in structure.values() if k not in ("prompt", "loss_weight", vocab.ADV_IND)]
    columns = [c for c in data_config.required_columns if c != vocab.ADV_IND]
    data_loader.check_dataset(dataset, columns=columns, features=features, fix="pick the matching config")


def draw_frames(dataset: Any, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """`num_frames` distinct frame indices (all frames when there are fewer), sorted."""
    n = min(num_frames, len(dataset))
    return np.sort(rng.choice(len(dataset), size=n, replace=False))


def other_episode_frame(dataset: Any, index: int, rng: np.random.Generator) -> int | None:
    """A random frame of another episode than frame `index`'s, or None for a one-episode dataset."""
    own = dataset.episode_for_frame(int(index))
    others = [ep for ep in dataset.episodes if ep.episode_index != own.episode_index]
    if not others:
        return None
    ep = others[int(rng.integers(len(others)))]
    return int(rng.integers(ep.from_index, ep.to_index))


# ------------------------------------------------------------------------------------------- ground truth


def is_tabletop_sim(dataset: Any) -> tuple[bool, str]:
    """Whether the tabletop layout of each frame can be rebuilt (and if not, why)."""
    if dataset.robot_type != SIM_ROBOT_TYPE or not dataset.has_column(SIM_SEED_COLUMN):
        return False, (
            f"not tabletop sim data (robot_type {dataset.robot_type!r}, "
            f"{'a' if dataset.has_column(SIM_SEED_COLUMN) else 'no'} {SIM_SEED_COLUMN!r} column)"
        )
    return True, ""


class TabletopLayouts:
    """The prompted button's centre (and every button's) of a tabletop frame, from its seed and prompt."""

    def __init__(self) -> None:
        from openpi.sim import tabletop

        self._tabletop = tabletop
        self._envs = {tabletop.TabletopEnv(task).prompt: tabletop.TabletopEnv(task) for task in tabletop.TASKS}

    def knows(self, prompt: str) -> bool:
        return prompt in self._envs

    def target(self, prompt: str, seed: int) -> np.ndarray:
        env = self._envs[prompt]
        env.reset(int(seed))
        return np.asarray(env.buttons[env.target], np.float64).copy()


# ------------------------------------------------------------------------------------------------- the probe


def _resolve_step_dir(checkpoint_dir: str | None) -> pathlib.Path:
    from openpi.training import checkpoints

    if checkpoint_dir is None:
        raise errors.ConfigError("Pass --checkpoint-dir, a checkpoint step directory (it holds params/ and assets/).")
    path = pathlib.Path(checkpoint_dir).expanduser()
    if not path.is_dir():
        raise errors.CheckpointError(
            f"Checkpoint directory {path} does not exist; pass --checkpoint-dir=<run dir>/<step> (it holds params/)."
        )
    if (path / checkpoints.PARAMS).is_dir():
        return path
    latest = checkpoints.latest_step_dir(path)
    if latest is None:
        raise errors.CheckpointError(
            f"{path} holds neither params/ nor finished steps; pass a checkpoint step directory such as <run>/<step>."
        )
    logger.info("Using the latest step of %s: %s", path, latest.name)
    return latest


def run_tokenizer(step_dir: pathlib.Path) -> pathlib.Path | None:
    """The PaliGemma tokenizer in the data home of the run that wrote `step_dir` (nearest ancestor first), or None.

    A sim run trains with toy tokenizers under its own data home; probing its checkpoint with any other tokenizer
    (the user's cache, a missing file) fails or, worse, feeds the model token ids it never saw.
    """
    from openpi.models import tokenizer as _tokenizer

    for parent in pathlib.Path(step_dir).resolve().parents:
        for name in RUN_DATA_HOMES:
            path = parent / name / _tokenizer.PaligemmaTokenizer.default_relpath
            if path.is_file():
                return path
    return None


def _checkpoint_asset_id(step_dir: pathlib.Path, asset_id: str | None) -> str | None:
    """The checkpoint's norm-stats asset: `asset_id` if it has it, else its only one (the data probed may live in
    another folder than the data it was trained on); otherwise `asset_id`, and loading says what it has."""
    from openpi.training import checkpoints

    assets = step_dir / checkpoints.ASSETS
    found = sorted(p.name for p in assets.iterdir() if (p / "norm_stats.json").is_file()) if assets.is_dir() else []
    return found[0] if asset_id not in found and len(found) == 1 else asset_id


def probe(train_config: Any, args: ProbeArgs) -> dict[str, Any]:
    """Runs every perturbation on `args.num_frames` frames; returns the result (also written to `args.output`)."""
    from openpi.datasets import lerobot
    from openpi.policies import policy_config
    from openpi.training import checkpoints

    if args.num_frames < 1:
        raise errors.ConfigError(f"--num-frames must be at least 1, got {args.num_frames}.")
    if args.state_noise < 0:
        raise errors.ConfigError(f"--state-noise must be non-negative, got {args.state_noise}.")
    step_dir = _resolve_step_dir(args.checkpoint_dir)
    tokenizer = run_tokenizer(step_dir) if train_config.tokenizer_path is None else None
    if tokenizer is not None:
        logger.info(
            "Using the tokenizer of the run that wrote %s: %s (--tokenizer-path overrides).", step_dir, tokenizer
        )
        train_config = dataclasses.replace(train_config, tokenizer_path=str(tokenizer))
    if args.data_dir is not None:
        train_config = dataclasses.replace(
            train_config, data=dataclasses.replace(train_config.data, repo_id=args.data_dir)
        )
    data_root = train_config.data.repo_id
    if data_root is None:
        raise errors.ConfigError("Pass --data-dir, the dataset to draw frames from.")
    dataset = lerobot.LeRobotDataset.open(data_root)
    data = train_config.data
    asset_id = _checkpoint_asset_id(step_dir, data.resolved_asset_id())
    train_config = dataclasses.replace(
        train_config, data=dataclasses.replace(data, assets=dataclasses.replace(data.assets, asset_id=asset_id))
    )
    data_config = policy_config.inference_data_config(train_config, step_dir / "assets")
    if data_config.fake_data or "actions" not in _repack_structure(data_config):
        raise errors.ConfigError(
            f"Config {train_config.name} reads no dataset (fake data); probe with the config the checkpoint was "
            "trained with on a LeRobot dataset."
        )
    check_dataset(dataset, data_config)
    norm_stats = checkpoints.restore_norm_stats(step_dir, data_config.asset_id)

    model = train_config.model
    pistar = bool(getattr(model, "pistar", False))
    baseline_ind = args.adv_ind
    reader = FrameReader(dataset, data_config, model.action_horizon, baseline_ind)
    policy = policy_config.create_trained_policy(
        train_config,
        step_dir,
        sample_kwargs={"num_steps": args.num_steps},
        norm_stats=norm_stats,
        cfg_beta=args.cfg_beta,
        seed=args.seed,
    )

    rng = np.random.default_rng(args.seed)
    frames = draw_frames(dataset, args.num_frames, rng)
    tasks = sorted(set(dataset.tasks.values()))
    skipped: list[dict[str, str]] = []
    one_episode = dataset.num_episodes < 2
    if not reader.cameras:
        skipped.append({"name": "image_*", "reason": "the config reads no cameras"})
    elif one_episode:
        skipped.append({"name": f"{IMAGE_SWAP}/*", "reason": "the dataset has one episode (no other episode's frame)"})
    can_swap_prompt = data_config.prompt_from_task and len(tasks) >= 2
    if not data_config.prompt_from_task:
        skipped.append({"name": PROMPT_SWAP, "reason": "the config does not read the prompt from the dataset"})
    elif len(tasks) < 2:
        skipped.append({"name": PROMPT_SWAP, "reason": f"the dataset has one task ({tasks[0]!r})"})
    indicators = [v for v in vocab.ADV_IND_VALUES if v != baseline_ind] if pistar else []
    if not pistar:
        skipped.append({"name": f"{ADV_IND}/*", "reason": "not a pi0.6 config (its prompt has no indicator)"})
    state_std = np.asarray(norm_stats["state"].std) if "state" in norm_stats else None
    if state_std is None:
        skipped.append({"name": STATE_NOISE, "reason": "the checkpoint has no state norm stats"})

    names = [IDENTITY, NOISE]
    if not one_episode:
        names += [f"{IMAGE_SWAP}/{c}" for c in reader.cameras]
    names += [f"{IMAGE_BLACK}/{c}" for c in reader.cameras]
    names += [PROMPT_SWAP] if can_swap_prompt else []
    names += [STATE_NOISE] if state_std is not None else []
    names += [f"{ADV_IND}/{v}" for v in indicators]
    changes: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    reference: list[tuple[float, float]] = []

    sim_ok, sim_reason = is_tabletop_sim(dataset)
    layouts = TabletopLayouts() if sim_ok else None
    seeds = np.asarray(dataset.column(SIM_SEED_COLUMN)).reshape(len(dataset), -1)[:, 0] if sim_ok else None
    gt_pred, gt_targets, gt_swap_pred, gt_swap_new, gt_swap_old = [], [], [], [], []
    unknown_prompts: set[str] = set()

    noise_shape = (model.action_horizon, model.action_dim)
    progress = _progress.Progress(len(frames), "probe", unit="frames", interval_s=2.0)
    for index in frames:
        obs, recorded = reader(index)
        noise = rng.standard_normal(noise_shape).astype(np.float32)
        other_noise = rng.standard_normal(noise_shape).astype(np.float32)

        def act(o, n=noise):
            return np.asarray(policy.infer(o, noise=n)["actions"])

        base = act(obs)
        reference.append(action_changes(recorded[: len(base)], base))
        variants: dict[str, np.ndarray] = {IDENTITY: act(obs), NOISE: act(obs, other_noise)}
        if reader.cameras and not one_episode:
            other_obs, _ = reader(other_episode_frame(dataset, index, rng))
            for camera in reader.cameras:
                variants[f"{IMAGE_SWAP}/{camera}"] = act(swap_image(obs, camera, other_obs))
        for camera in reader.cameras:
            variants[f"{IMAGE_BLACK}/{camera}"] = act(black_image(obs, camera))
        new_prompt = None
        if can_swap_prompt:
            choices = [t for t in tasks if t != obs["prompt"]]
            new_prompt = choices[int(rng.integers(len(choices)))]
            variants[PROMPT_SWAP] = act(with_prompt(obs, new_prompt))
        if state_std is not None:
            variants[STATE_NOISE] = act(perturb_state(obs, rng, args.state_noise, state_std))
        for value in indicators:
            variants[f"{ADV_IND}/{value}"] = act(with_indicator(obs, value))
        for name, actions in variants.items():
            changes[name].append(action_changes(base, actions))

        if layouts is not None:
            prompt = obs.get("prompt", "")
            if layouts.knows(prompt):
                seed = int(seeds[index])
                gt_pred.append(position_target(base[0]))
                gt_targets.append(layouts.target(prompt, seed))
                if new_prompt is not None and layouts.knows(new_prompt):
                    gt_swap_pred.append(position_target(variants[PROMPT_SWAP][0]))
                    gt_swap_new.append(layouts.target(new_prompt, seed))
                    gt_swap_old.append(gt_targets[-1])
            else:
                unknown_prompts.add(prompt)
        progress.update()

    ground_truth = None
    if layouts is not None and gt_pred:
        ground_truth = {"n": len(gt_pred), **first_target_errors(np.stack(gt_pred), np.stack(gt_targets))}
        if gt_swap_pred:
            pred = np.stack(gt_swap_pred)
            ground_truth["prompt_swap"] = {
                "n": len(pred),
                "to_new_target": describe(np.linalg.norm(pred - np.stack(gt_swap_new), axis=-1)),
                "to_original_target": describe(np.linalg.norm(pred - np.stack(gt_swap_old), axis=-1)),
            }
        if unknown_prompts:
            ground_truth["frames_without_a_tabletop_prompt"] = sorted(unknown_prompts)
    elif layouts is not None:
        sim_reason = f"no sampled frame has a tabletop prompt (prompts: {sorted(unknown_prompts)})"

    result = {
        "config": train_config.name,
        "checkpoint_dir": str(step_dir),
        "data_dir": str(dataset.root),
        "robot_type": dataset.robot_type,
        "num_frames": len(frames),
        "frames": [int(i) for i in frames],
        "seed": args.seed,
        "num_steps": args.num_steps,
        "adv_ind": baseline_ind if pistar else None,
        "cfg_beta": args.cfg_beta,
        "state_noise": args.state_noise,
        "action_space": "unnormalised robot/env actions (the policy's outputs as served)",
        "rows": summarize(changes),
        "skipped": skipped,
        "reference": {
            "description": "baseline chunk vs the dataset's recorded chunk",
            "chunk_l2": describe([c for c, _ in reference]),
            "first_action_l2": describe([f for _, f in reference]),
        },
        "ground_truth": ground_truth,
        "ground_truth_skipped": None if ground_truth is not None else sim_reason,
    }
    atomic.write_text(args.output, json.dumps(result, indent=2) + "\n")
    return result


# --------------------------------------------------------------------------------------------------- the CLI

DESCRIPTION = (
    "Probe a policy checkpoint on a dataset: how much the action chunk moves when one input changes "
    "(noise, each image, the prompt, the state, the pi0.6 indicator). Flags after the config name are the probe's "
    "(below) or any training-config override (e.g. --data.repo-id, --tokenizer-path; "
    "`train.py <config> --help` lists those)."
)


def split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Flags after the config name -> (the probe's flags, training-config overrides); a flag's value words go with
    it. Names are compared in tyro's dashed spelling, so `--num_frames 8` is the probe's too."""
    ours = {"--" + field.name.replace("_", "-") for field in dataclasses.fields(ProbeArgs)}
    probe_args: list[str] = []
    overrides: list[str] = []
    target = overrides
    for arg in args:
        if arg.startswith("--"):
            target = probe_args if arg.partition("=")[0].replace("_", "-") in ours else overrides
        target.append(arg)
    return probe_args, overrides


def parse(args: Sequence[str]) -> tuple[Any, ProbeArgs]:
    """`<config name> [--probe flags] [--config overrides]` -> (TrainConfig, ProbeArgs)."""
    from openpi.training import config as _config

    registry = {name: _config.get_config(name) for name in _config.config_names()}
    name, _, rest = _cli.split_name(registry, args, kind="training config", prog=PROG, description=DESCRIPTION)
    if any(a in ("-h", "--help") for a in rest):
        _cli.parse(ProbeArgs, ["--help"], prog=f"{PROG} {name}", description=DESCRIPTION)
    probe_args, overrides = split_args(rest)
    # A run name is required for training only; the probe writes no checkpoint.
    train_config = _config.cli([name, "--exp-name=probe", *overrides])
    return train_config, _cli.parse(ProbeArgs, probe_args, prog=f"{PROG} {name}", description=DESCRIPTION)


def main(args: Sequence[str]) -> dict[str, Any]:
    """`scripts/probe_policy.py`'s body (run through `cli.run`): parse, probe, print the table, write the JSON."""
    train_config, probe_args = parse(args)
    result = probe(train_config, probe_args)
    print(format_table(result))
    print(f"\nWrote {probe_args.output}")
    return result
