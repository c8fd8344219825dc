import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from openpi.shared import errors
from openpi.training import sharding


def test_fsdp_spec_picks_largest_divisible_axis():
    P = jax.sharding.PartitionSpec
    assert sharding.fsdp_spec((1024, 3), 4, 2, min_size_mbytes=0) == P("fsdp", None)
    assert sharding.fsdp_spec((3, 1025, 8), 4, 2, min_size_mbytes=0) == P(None, None, "fsdp")
    assert sharding.fsdp_spec((1024,), 4, 2, min_size_mbytes=0) == P()
    assert sharding.fsdp_spec((1024, 4), 4, 2, min_size_mbytes=4) == P()  # too small to bother
    assert sharding.fsdp_spec((1024, 4), 4, 1, min_size_mbytes=0) == P()


def test_single_device_mesh_and_divisibility_errors():
    mesh = sharding.make_mesh(1)
    assert mesh.axis_names == ("batch", "fsdp")
    with pytest.raises(errors.ConfigError, match="fsdp_devices"):
        sharding.make_mesh(3)
    sharding.check_batch_divisible(2, mesh)


def test_four_host_devices_shard_params_and_data():
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from openpi.training import sharding
        mesh = sharding.make_mesh(2)
        assert dict(mesh.shape) == {"batch": 2, "fsdp": 2}, mesh.shape
        tree = {"big": jax.ShapeDtypeStruct((512, 64), jnp.float32), "bias": jax.ShapeDtypeStruct((64,), jnp.float32)}
        shardings = sharding.fsdp_sharding(tree, mesh, min_size_mbytes=0)
        x = jax.device_put(np.ones((512, 64), np.float32), shardings["big"])
        assert x.addressable_shards[0].data.shape == (256, 64)
        batch = jax.device_put(np.arange(8.0), sharding.data_sharding(mesh))
        assert {s.data.shape for s in batch.addressable_shards} == {(2,)}
        try:
            sharding.check_batch_divisible(6, mesh)
        except Exception as e:
            print("ERR", e)
        print("OK")
        """
    )
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout and "not divisible by the 4 devices" in out.stdout
    assert np.ndim(0) == 0
