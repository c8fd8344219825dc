"""Subprocess entry for the multi-device / multi-process training tests (run by tests/train_distributed_test.py).

    python tests/train_worker.py '<json: workspace, spm, overrides>'

Joins other processes when JAX_NUM_PROCESSES is set (as scripts/train.py does), trains debug_pi06, and
prints one JSON line with what the test checks: the frames this process read, shardings, a parameter checksum.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def main() -> None:
    spec = json.loads(sys.argv[1])
    import train_support

    from openpi.training import distributed

    distributed.maybe_initialize_distributed()
    import jax
    import numpy as np

    from openpi.datasets import lerobot
    from openpi.training import data_loader as _data_loader
    from openpi.training import trainer as _trainer
    from openpi.training import utils as _utils

    cfg = train_support.debug_config(spec["workspace"], spec["spm"], **spec["overrides"])
    state = _trainer.train(cfg, progress=False)
    ds = lerobot.LeRobotDataset.open(cfg.data.repo_id)
    sampler = _data_loader.BatchSampler(
        range(len(ds)),
        cfg.batch_size,
        seed=cfg.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    frames = [int(i) for step in range(cfg.num_train_steps) for i in sampler.local_batch(step)[0]]
    embedding = state.params["PaliGemma"]["llm"]["embedder"]["input_embedding"]
    out_proj = state.params["action_out_proj"]["kernel"]
    served = _utils.params_for_inference(state, cfg.get_freeze_filter())["action_out_proj"]["kernel"]
    mu = [x for x in jax.tree.leaves(state.opt_state) if getattr(x, "shape", None) == embedding.shape]
    result = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "step": int(np.asarray(state.step.addressable_data(0))),
        "frames": frames,
        "embedding_spec": [str(a) for a in embedding.sharding.spec],
        "embedding_shape": list(embedding.shape),
        "embedding_shard_shape": list(embedding.addressable_shards[0].data.shape),
        "opt_state_sharded": bool(mu) and "fsdp" in str(mu[0].sharding.spec),
        "out_proj_sum": float(np.asarray(out_proj.addressable_data(0), np.float64).sum()),
        "served_out_proj_sum": float(np.asarray(served.addressable_data(0), np.float64).sum()),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
