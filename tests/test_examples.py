"""The example packages' own tests (which use ``core.testing``) pass when the packages are installed into a
fresh virtual environment beside the installed dimo, as a third-party author would run them."""
import subprocess
import sys

import pytest

from conftest import ROOT, clean_env, venv_over_this_interpreter


@pytest.mark.slow
@pytest.mark.parametrize("package", ["dimo-plugin-example", "dimo-teacher-example"])
def test_example_package_tests_pass(package, tmp_path):
    python = venv_over_this_interpreter(tmp_path / "venv")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              "--no-build-isolation", str(ROOT / "examples" / package)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    res = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "examples" / package
                                                                                          / "tests")],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path,
                         env=clean_env({"DIMO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
