import jax
import jax.numpy as jnp
import pytest

from mcmcvae import nets


@pytest.mark.parametrize("architecture,shape", [("mlp", (28, 28, 1)), ("conv", (28, 28, 1)), ("conv", (32, 32, 3))])
def test_encoder_decoder_shapes(architecture, shape):
    enc = nets.make_encoder(architecture, latent_dim=7)
    dec = nets.make_decoder(architecture, shape)
    x = jnp.zeros((3, *shape))
    loc, scale = enc.apply(enc.init(jax.random.key(0), x), None, x)
    assert loc.shape == scale.shape == (3, 7)
    assert bool(jnp.all(scale > 0))
    out = dec.apply(dec.init(jax.random.key(1), loc), None, loc)
    assert out.shape == (3, *shape)


def test_default_mlp_is_200_200():
    enc = nets.make_encoder("mlp", latent_dim=10)
    params = enc.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    sizes = sorted(p["w"].shape for p in params.values())
    assert (784, 200) in sizes and (200, 200) in sizes


def test_unknown_architecture_and_activation():
    with pytest.raises(ValueError, match="choose one of"):
        nets.make_encoder("resnet", 10)
    dec = nets.make_decoder("mlp", (28, 28, 1), activation="swishy")
    with pytest.raises(ValueError, match="unknown activation"):
        dec.init(jax.random.key(0), jnp.zeros((1, 10)))
