"""FLOPs of a JAX program counted from its jaxpr.

Why: XLA's `compiled.cost_analysis()` visits a `while` loop's body once, and openpi's models run their 18 (Gemma) or
27 (SigLIP) layers as one `nn.scan`, so XLA reports ~1/18 of a train step's FLOPs and an MFU computed from it is
~18x too low. Counting the jaxpr instead multiplies each scanned body by its length.
"""

import math

from jax.extend import core as jex_core


def jaxpr_flops(jaxpr) -> float:
    """Multiply-add FLOPs (2 per MAC) of every dot_general and convolution in a (closed) jaxpr, sub-jaxprs included
    (jit, remat, custom_vjp, ...), a scan's body times its length and a cond's costliest branch; elementwise ops are
    left out (a few % of a transformer's)."""
    inner = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in inner.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
        elif name == "conv_general_dilated":
            # Each output element is a dot over the kernel's (in features / groups) x spatial extent.
            rhs = eqn.invars[1].aval.shape
            out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) / rhs[out_feature_dim]
        subs = [v for v in eqn.params.values() if isinstance(v, jex_core.Jaxpr | jex_core.ClosedJaxpr)]
        subs += [b for v in eqn.params.values() if isinstance(v, tuple) for b in v
                 if isinstance(b, jex_core.Jaxpr | jex_core.ClosedJaxpr)]  # fmt: skip
        if name == "cond":
            total += max((jaxpr_flops(b) for b in subs), default=0.0)
            continue
        times = eqn.params.get("length", 1) if name == "scan" else 1
        total += times * sum(jaxpr_flops(b) for b in subs)
    return total
