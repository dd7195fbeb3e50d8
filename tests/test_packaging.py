"""The wheel: what `pip install .` (not editable) installs must hold the shipped configs and find them."""

import pathlib
import shutil
import subprocess
import sys
import zipfile

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_wheel_ships_the_configs(tmp_path):
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "sassnet_tf", source / "sassnet_tf", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             str(source), "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("sassnet_tf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"sassnet_tf/configs/{p.relative_to(REPO / 'sassnet_tf' / 'configs')}"
               for p in (REPO / "sassnet_tf" / "configs").rglob("*") if p.is_file()}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert {"sassnet_tf/configs/phantom_demo.yaml", "sassnet_tf/configs/la_8labeled.yaml",
            "sassnet_tf/configs/lists/la_eval10.list"} <= names
    # installed elsewhere, the package finds them next to its own modules
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    found = subprocess.run([sys.executable, "-c", "import sassnet_tf.config as c; print(c.default_config('LA', 8)[0])"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120,
                           env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert found.returncode == 0, found.stderr[-2000:]
    assert pathlib.Path(found.stdout.strip()) == site / "sassnet_tf" / "configs" / "la_8labeled.yaml"
