import jax
import jax.numpy as jnp

from openpi.shared import flops


def test_jaxpr_flops_counts_a_scanned_body_once_per_iteration_and_convolutions():
    def layers(x, w):
        y, _ = jax.lax.scan(lambda c, wi: (jnp.tanh(c @ wi), None), x, w)
        return y.sum()

    # Three [4, 8] x [8, 8] matmuls: 2 * 4 * 8 * 8 each.
    assert flops.jaxpr_flops(jax.make_jaxpr(layers)(jnp.ones((4, 8)), jnp.ones((3, 8, 8)))) == 3 * 2 * 4 * 8 * 8
    # The backward adds two matmuls per layer (the gradients of the input and of the weight).
    grad = jax.make_jaxpr(jax.grad(layers, argnums=1))(jnp.ones((4, 8)), jnp.ones((3, 8, 8)))
    assert flops.jaxpr_flops(grad) == 3 * 3 * 2 * 4 * 8 * 8
    conv = jax.make_jaxpr(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID"))
    # 5 output features x 7 x 7 positions, each a 3 x 2 x 2 dot product.
    assert flops.jaxpr_flops(conv(jnp.ones((1, 3, 8, 8)), jnp.ones((5, 3, 2, 2)))) == 2 * 5 * 7 * 7 * 3 * 2 * 2


def test_a_channels_last_convolution_reads_its_layout_from_the_dimension_numbers():
    # SigLIP's patch embedding layout (NHWC input, HWIO kernel): 4 output features, larger than no other axis.
    conv = jax.make_jaxpr(
        lambda x, k: jax.lax.conv_general_dilated(x, k, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    )
    # 4 x 4 output positions x 4 features, each a 2 x 2 x 8 dot product.
    assert flops.jaxpr_flops(conv(jnp.ones((1, 8, 8, 8)), jnp.ones((2, 2, 8, 4)))) == 2 * 4 * 4 * 4 * 2 * 2 * 8
