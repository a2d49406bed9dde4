"""The package as it ships: ``python -m build`` makes an sdist and a wheel, and the wheel installs
into a fresh virtual environment and imports, with its type marker and without the studies.

Offline: the build runs without isolation (``--no-isolation``, this environment's setuptools) and
without oneDNN's headers, so this wheel is the pure-JAX one (the kernel's build is tested by the
editable install and ``test_kernels.py``); the fresh venv installs the wheel alone (``--no-deps``)
and sees this environment's dependencies through a path entry, not its site-packages hooks, so the
editable ``recurrax`` of this checkout stays out of it.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import recurrax

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_wheel_installs_into_a_fresh_venv_and_imports(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check", "--outdir",
                    str(dist), str(ROOT)], check=True, capture_output=True, timeout=600)
    version = recurrax.__version__
    (sdist,), (wheel,) = dist.glob("*.tar.gz"), dist.glob("*.whl")
    assert sdist.name == f"recurrax-{version}.tar.gz" and wheel.name.startswith(f"recurrax-{version}-")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    for required in ("pyproject.toml", "setup.py", "README.md", "recurrax/kernels/_onednn_ext.cc", "recurrax/py.typed"):
        assert f"recurrax-{version}/{required}" in names, required
    with zipfile.ZipFile(wheel) as archive:
        top_level = {name.split("/")[0] for name in archive.namelist()}
        assert "recurrax/py.typed" in archive.namelist()
    assert top_level == {"recurrax", f"recurrax-{version}.dist-info"}  # no experiments/, no tests/

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True,
                          capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target", site,
                    str(wheel)], check=True, capture_output=True, timeout=300)
    (pathlib.Path(site) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    probe = ("import importlib.util, pathlib, recurrax; "
             "print(recurrax.__version__, pathlib.Path(recurrax.__file__).parent.parent, "
             "importlib.util.find_spec('experiments') is None, (pathlib.Path(recurrax.__file__).parent / 'py.typed').is_file(), "
             "float(recurrax.rnn(recurrax.init_rnn(__import__('jax').random.key(0), 'gru', 2, 3), "
             "__import__('jax').numpy.ones((1, 4, 2)))[1].sum()) != 0)")
    completed = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                               env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split() == [version, site, "True", "True", "True"], completed.stdout
