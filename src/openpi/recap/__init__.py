"""RECAP's vocabulary and label maths, numpy only: `vocab`, `labels`, `advantage`, `provenance`.

The layer right above `shared` (CONTRIBUTING.md): the tokenizer, the transforms, the datasets, the policies and
the trainers all use its words and labels. What needs a dataset reader or a value model moved up a layer: the
relabelling pipeline to `openpi.relabel`, the stage-1 converter to `openpi.datasets`, the progress line (shared by
relabelling, rollouts and evaluation) to `openpi.shared.progress`; their old paths here fail with one sentence
naming the new home.
"""

from openpi.shared import moved as _moved

__getattr__ = _moved.install(
    __name__,
    {
        **{
            name: f"openpi.relabel.{name}"
            for name in (
                "columns",
                "decode",
                "inference",
                "model_loading",
                "relabel",
                "relabel_cli",
                "relabel_config",
                "report",
                "value_cache",
            )
        },
        "convert": "openpi.datasets.convert",
        "convert_cli": "openpi.datasets.convert_cli",
        "progress": "openpi.shared.progress",
    },
)
