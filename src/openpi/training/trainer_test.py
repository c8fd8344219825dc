"""The shared Trainer on a toy linear model: frozen leaves, EMA, and the checkpoint items round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi.models import params_io
from openpi.shared import errors
from openpi.training import optimizer as _optimizer
from openpi.training import trainer as _trainer


def _toy(ema_decay=0.5) -> _trainer.Trainer:
    def init_params(rng):
        a, b = jax.random.split(rng)
        return {"backbone": {"w": jax.random.normal(a, (3, 3))}, "head": {"w": jax.random.normal(b, (3,))}}

    def loss(params, rng, batch):
        pred = batch["x"] @ params["backbone"]["w"] @ params["head"]["w"]
        return jnp.mean((pred - batch["y"]) ** 2), {"pred_mean": jnp.mean(pred)}

    return _trainer.Trainer(
        init_params=init_params,
        loss=loss,
        is_frozen=lambda path: path.startswith("backbone/"),
        tx=_optimizer.create_optimizer(_optimizer.AdamW(), _optimizer.CosineDecaySchedule(warmup_steps=0)),
        ema_decay=ema_decay,
    )


def _batch():
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(4, 3)).astype(np.float32), "y": rng.normal(size=(4,)).astype(np.float32)}


def test_step_trains_only_trainable_leaves_and_keeps_frozen_in_bf16():
    trainer = _toy()
    state = trainer.init(jax.random.key(0))
    assert state.params["backbone"]["w"].dtype == jnp.bfloat16 and state.params["head"]["w"].dtype == jnp.float32
    new, info = jax.jit(trainer.step)(jax.random.key(1), state, _batch())
    assert set(info) == {"loss", "pred_mean", "grad_norm", "param_norm"} and int(new.step) == 1
    np.testing.assert_array_equal(new.params["backbone"]["w"], state.params["backbone"]["w"])
    assert not np.array_equal(new.params["head"]["w"], state.params["head"]["w"])
    assert set(new.ema_params) == {"head/w"}  # EMA and optimizer state exist for trainable leaves only


@pytest.mark.parametrize("with_frozen", [True, False])
def test_checkpoint_items_round_trip(with_frozen):
    trainer = _toy()
    state = trainer.init(jax.random.key(0))
    for _ in range(2):
        state, _ = trainer.step(jax.random.key(1), state, _batch())
    params, train_state = trainer.checkpoint_items(state, with_frozen=with_frozen)
    assert ("backbone" in params) == with_frozen
    # params/ holds the EMA (what serving loads); train_state/ the raw trainable weights.
    np.testing.assert_array_equal(params["head"]["w"], state.ema_params["head/w"])
    frozen = None if with_frozen else {"backbone/w": state.params["backbone"]["w"]}
    restored = trainer.state_from_checkpoint(params, train_state, frozen)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert params_io.flatten(trainer.inference_params(restored))["head/w"] is restored.ema_params["head/w"]


def test_divergence_is_one_user_error():
    _trainer.check_finite_loss(np.array([1.0]), 3, "run")
    with pytest.raises(_trainer.TrainingDivergedError, match="NaN/inf by step 3 of run; check the labels"):
        _trainer.check_finite_loss(np.array([np.inf]), 3, "run", "check the labels")


class _FileLoader:
    """A weight loader as a third party might write one: fills `backbone` from the given arrays, no checks of its own."""

    def __init__(self, backbone_w: np.ndarray):
        self.backbone_w = backbone_w

    def load(self, params):
        return {**params, "backbone": {"w": self.backbone_w}}

    def __repr__(self):
        return "file.npz"


def test_load_weights_checks_every_loader_against_the_model():
    shapes = jax.eval_shape(_toy().init_params, jax.random.key(0))
    flat = _trainer.load_weights(_FileLoader(np.ones((3, 3), np.float32)), shapes)
    assert set(flat) == {"backbone/w"}  # the leaf it left as a shape is initialised fresh
    with pytest.raises(errors.CheckpointError, match=r"'backbone/w' has shape \(3, 4\) in the weights from file.npz"):
        _trainer.load_weights(_FileLoader(np.ones((3, 4), np.float32)), shapes)


def test_the_progress_line_shows_one_rate_and_an_eta_computed_from_it():
    """Issue 20: tqdm's dispatch rate (5.89it/s, ETA 20 s) sat beside the measured one (it_s=0.41, eta=337s)."""
    import io
    import re

    line = _trainer.ProgressLine(200, 0, file=io.StringIO())
    for _ in range(62):
        line.update()  # dispatched in microseconds: tqdm alone would show thousands of it/s
    line.show(0.1234, 0.41, 138, grad_norm=2.0)
    text = str(line)
    assert len(re.findall(r"it/s|s/it", text)) == 1 and "0.41 it/s" in text, text
    assert "eta 05:36" in text and "<" not in text, text  # 138 / 0.41 = 336.6 s; no tqdm remaining time
    assert "62/200" in text and "loss=0.1234, grad_norm=2.000" in text, text
    line.show(0.5, None, 199)  # the first interval includes compilation: no rate, no ETA of hours
    assert "eta" not in str(line) and "it/s after the first log interval" in str(line), str(line)
    line.close()


def test_an_infer_twin_is_refused_for_training():
    """Issue 29.4: training debug_pi06_infer (indicator dropout 0) ran without a word and never learnt the
    unconditional prompt that classifier-free guidance needs."""
    from openpi.training import config as _config
    from openpi.training import sharding as _sharding

    with pytest.raises(errors.ConfigError, match=r"'debug_pi06_infer' .* train 'debug_pi06' .* serve"):
        _trainer.preflight(_config.get_config("debug_pi06_infer"), _sharding.make_mesh(1))
    # Its training config, and a training config whose dropout is set to 0 on purpose (an ablation), still pass.
    assert _config.get_config("debug_pi06").serving_twin_of is None


def test_train_py_refuses_an_infer_twin_in_one_line(tmp_path):
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[3] / "scripts" / "train.py"
    proc = subprocess.run(
        [sys.executable, str(script), "debug_pi06_infer", "--exp-name=x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "train 'debug_pi06'" in proc.stderr
    assert not (tmp_path / "checkpoints").exists()
