"""Train a policy from a named config: one GPU, many GPUs (FSDP over a mesh), or many hosts.

    uv run scripts/train.py <config name> --exp-name=my_run [--overwrite | --resume] [--field=value ...]

Multi-host runs use JAX's own distributed runtime. Every process runs this same command; each reads only its
share of every batch and all of them write one checkpoint together. Tell the processes how to meet with
environment variables (or the equivalent flags, which must come before the config name):

    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=<0 or 1> uv run scripts/train.py ...
    uv run scripts/train.py --coordinator-address=host0:1234 --num-processes=2 --process-id=0 <config> ...

- SLURM: `srun --ntasks=<hosts> --ntasks-per-node=1 uv run scripts/train.py <config> ...` works without the
  variables: when SLURM_NTASKS > 1, `jax.distributed.initialize()` reads SLURM's own variables.
- TPU pods: run the command on every worker (`gcloud compute tpus tpu-vm ssh ... --worker=all`) and set
  OPENPI_DISTRIBUTED=1; JAX finds the coordinator from the TPU metadata.
- `--fsdp-devices=N` splits parameters and optimizer state over N devices (keep N within one host).

Before anything compiles the script checks the dataset columns, the norm stats, the weight files and that
the batch divides over the devices, and stops with one sentence when something is off. The trainer itself is
`openpi.training.trainer` (shared with scripts/train_value.py).
"""

from collections.abc import Sequence

from openpi.shared import cli
from openpi.training import trainer


def main(argv: Sequence[str] | None = None) -> None:
    cli.run(trainer.main, argv, name="openpi.train")


if __name__ == "__main__":
    main()
