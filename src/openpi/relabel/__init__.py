"""RECAP stage 5, relabelling `adv_ind` with a trained value model (`scripts/label_advantage_from_vlm.py`).

Registered configs (`relabel_config`), the command line (`relabel_cli`), reading the columns (`columns`), the
per-episode value cache (`value_cache`), decode workers (`decode`), inference over every local device
(`inference`), the value checkpoint's loading (`model_loading`), the pipeline itself (`relabel`) and its report
(`report`). It sits above training (it reads value checkpoints and decodes frames through the training data
loader); the label maths it applies stay below, in `openpi.recap`.
"""
