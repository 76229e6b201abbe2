"""Docs that must not drift: the generated option reference and the README's commands."""
import re
import subprocess
import sys

from conftest import ROOT, clean_env


def test_reference_is_current():
    fresh = subprocess.run([sys.executable, "-m", "core.docs"], capture_output=True, text=True, cwd=ROOT,
                           env=clean_env()).stdout
    committed = (ROOT / "docs" / "reference.md").read_text()
    assert fresh == committed, "docs/reference.md is stale: run `python -m core.docs > docs/reference.md`"


def test_every_option_of_dimo_and_inits_is_described():
    from plugins.inits import MixedInit
    from plugins.methods.dimo import DiMO
    for model in (DiMO.Config, MixedInit.Config):
        missing = [n for n, f in model.model_fields.items() if not f.description]
        assert not missing, f"{model.__qualname__} fields without a description: {missing}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    test_cmd = next(line for b in blocks for line in b.splitlines() if "pytest" in line)
    assert test_cmd.strip() in (ROOT / ".ci" / "run").read_text()
