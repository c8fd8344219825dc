import jax.numpy as jnp
import numpy as np
import optax

from openpi.training import optimizer as _optimizer


def test_cosine_schedule_matches_openpi_shape():
    schedule = _optimizer.CosineDecaySchedule().create()
    np.testing.assert_allclose(float(schedule(0)), 2.5e-5 / 1001, rtol=1e-4)
    np.testing.assert_allclose(float(schedule(1000)), 2.5e-5, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(30_000)), 2.5e-6, rtol=1e-5)
    assert float(schedule(500)) < float(schedule(1000)) and float(schedule(10_000)) > float(schedule(20_000))


def test_clipping_bounds_the_first_step():
    params = {"w": jnp.zeros(3)}
    tx = _optimizer.create_optimizer(
        _optimizer.AdamW(clip_gradient_norm=1.0, b1=0.0, b2=0.0), _optimizer.CosineDecaySchedule(warmup_steps=0)
    )
    updates, _ = tx.update({"w": jnp.array([1e6, 0.0, 0.0])}, tx.init(params), params)
    assert np.isfinite(np.asarray(updates["w"])).all()
    assert isinstance(tx, optax.GradientTransformation)
