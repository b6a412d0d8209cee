"""A torch-free reader for the tensors and attributes of a TorchScript archive.

A TorchScript file written by ``torch.jit.save`` is a zip archive laid out as::

    <root>/data.pkl        the module tree, pickled (protocol 2)
    <root>/data/<key>      raw little-endian bytes of each storage
    <root>/code/...        the TorchScript source of every module class
    <root>/constants.pkl   tensors that the code uses as constants
    <root>/byteorder       optional, "little" or "big"

``data.pkl`` refers to each storage through a persistent id
``("storage", <StorageType>, key, location, numel)`` and rebuilds tensors with
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``. Every module becomes an object of a
``__torch__.<qualified name>`` class whose state is a dict of its attributes.

The unpickler below is restricted: it resolves only the handful of globals that such a file needs and refuses
everything else, so reading a file never imports torch and never runs code from the file. Tensors come back as
numpy arrays that own their memory, modules as :class:`ScriptObject` trees.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from typing import Iterator

import ml_dtypes
import numpy as np

__all__ = ["ScriptObject", "load", "named_tensors", "named_modules"]

# Storage classes of the typed-storage era (the names data.pkl refers to) and their numpy dtypes.
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
}


class ScriptObject:
    """One object of a TorchScript class (usually an ``nn.Module``) as read from ``data.pkl``.

    Attributes
    ----------
    qualified_name : str
        The TorchScript class, e.g. ``"__torch__.inceptionv3.Conv2dLayer"``.
    attributes : dict
        The object's state: submodules (``ScriptObject``), tensors (``numpy.ndarray``) and plain values.
    """

    qualified_name = "__torch__"

    def __new__(cls, *args):
        del args  # NEWOBJ passes the (empty) constructor arguments; the state arrives through BUILD
        obj = super().__new__(cls)
        obj.attributes = {}
        return obj

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.qualified_name}: expected a dict state, got {type(state).__name__}")
        self.attributes = dict(state)

    @property
    def class_name(self) -> str:
        """The unmangled class name, e.g. ``"Conv2dLayer"`` for ``...___torch_mangle_2.Conv2dLayer``."""
        return self.qualified_name.rsplit(".", 1)[-1]

    def __repr__(self):
        return f"<{self.qualified_name} with {sorted(self.attributes)}>"


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    del requires_grad, backward_hooks, metadata
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:  # a scalar tensor
        return np.array(storage[storage_offset])
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:],
        shape=size,
        strides=tuple(s * itemsize for s in stride),
        writeable=False,
    )
    return np.array(view)  # a contiguous copy that owns its memory


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    del requires_grad, backward_hooks
    return data


def _build_list(values):
    return list(values)


_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "build_intlist"): _build_list,
    ("torch.jit._pickle", "build_floatlist"): _build_list,
    ("torch.jit._pickle", "build_boollist"): _build_list,
    ("torch.jit._pickle", "build_doublelist"): _build_list,
    ("torch.jit._pickle", "build_tensorlist"): _build_list,
    ("torch.jit._pickle", "build_genericlist"): _build_list,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, root: str, byteorder: str):
        super().__init__(file)
        self._archive = archive
        self._root = root
        self._byteorder = byteorder
        self._storages: dict[str, np.ndarray] = {}
        self._classes: dict[str, type] = {}

    def find_class(self, module, name):
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "__torch__" or module.startswith("__torch__."):
            qualified_name = f"{module}.{name}"
            if qualified_name not in self._classes:
                self._classes[qualified_name] = type(name, (ScriptObject,), {"qualified_name": qualified_name})
            return self._classes[qualified_name]
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name} from a TorchScript archive")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
        key = str(key)
        if key not in self._storages:
            raw = self._archive.read(f"{self._root}/data/{key}")
            dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
            array = np.frombuffer(raw, dtype=dtype, count=int(numel))
            self._storages[key] = array.astype(storage_type.dtype.newbyteorder("="), copy=False)
        return self._storages[key]


def load(path: str | os.PathLike) -> ScriptObject:
    """Read the module tree of a TorchScript archive without torch.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``torch.jit.save``.

    Returns
    -------
    ScriptObject
        The top-level module; tensors are numpy arrays in its (nested) ``attributes``.

    Raises
    ------
    pickle.UnpicklingError
        If ``data.pkl`` refers to anything outside the few globals a TorchScript archive needs.
    ValueError
        If the file is not a TorchScript zip archive.

    Examples
    --------
    The FID Inception-V3 file that KID uses:

    >>> from mcmcvae.evaluate._torchscript import load, named_tensors
    >>> from mcmcvae.evaluate.inception import weights_path
    >>> weights = named_tensors(load(weights_path()))
    >>> weights["net.layers.conv.weight"].shape  # torch's (out, in, height, width) layout
    (32, 3, 3, 3)
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is not a TorchScript archive (not a zip file)") from error
    with archive:
        names = archive.namelist()
        roots = [name[: -len("/data.pkl")] for name in names if name.count("/") == 1 and name.endswith("/data.pkl")]
        if len(roots) != 1:
            raise ValueError(f"{path} is not a TorchScript archive: expected one <root>/data.pkl, found {len(roots)}")
        (root,) = roots
        byteorder = "little"
        if f"{root}/byteorder" in names:
            byteorder = archive.read(f"{root}/byteorder").decode().strip()
            if byteorder not in ("little", "big"):
                raise ValueError(f"{path}: unknown byte order {byteorder!r}")
        with archive.open(f"{root}/data.pkl") as file:
            tree = _Unpickler(file, archive, root, byteorder).load()
    if not isinstance(tree, ScriptObject):
        raise ValueError(f"{path}: data.pkl holds a {type(tree).__name__}, not a TorchScript module")
    return tree


def named_modules(tree: ScriptObject, prefix: str = "") -> Iterator[tuple[str, ScriptObject]]:
    """Yield ``(dotted name, module)`` for ``tree`` and every submodule, depth first, in attribute order."""
    yield prefix, tree
    for name, value in tree.attributes.items():
        if isinstance(value, ScriptObject):
            yield from named_modules(value, f"{prefix}.{name}" if prefix else name)


def named_tensors(tree: ScriptObject) -> dict[str, np.ndarray]:
    """All tensors of a module tree by dotted name, as ``state_dict()`` would name them."""
    tensors = {}
    for module_name, module in named_modules(tree):
        for name, value in module.attributes.items():
            if isinstance(value, np.ndarray):
                tensors[f"{module_name}.{name}" if module_name else name] = value
    return tensors
