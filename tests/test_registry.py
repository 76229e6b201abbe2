"""Plugin discovery: built-ins through entry points, third-party, broken, blocked, did-you-mean."""
import sys
import textwrap

import pytest

from core.config import resolve
from core.errors import UserError
from registry.registry import ENV_BLOCKED, ENV_DISABLE_AUTOLOAD, KINDS, UnknownPluginError, load_registry


def make_dist(root, name, module, source, entry="plug"):
    """A real installed distribution on sys.path: dist-info with entry_points.txt + a module."""
    info = root / f"{name.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[dimo]\n{entry} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
    from core.interfaces import Divergence
    from registry import hookimpl
    class Half(Divergence):
        def value(self, lp, lq): return 0.5 * (lp.exp() * (lp - lq)).sum(-1)
        def grad(self, lp, lq): return 0.5 * (lq.exp() - lp.exp())
    @hookimpl
    def dimo_register(register):
        register("divergence", "half_fkl", Half)
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in ("good_plugin", "broken_plugin"):
        sys.modules.pop(mod, None)


def test_builtins_cover_every_kind_they_promise():
    reg = load_registry()
    for kind, name in [("teacher", "digits"), ("method", "mdm"), ("method", "dimo"), ("divergence", "fkl"),
                       ("divergence", "rkl"), ("divergence", "jeffrey"), ("divergence", "f"), ("init", "mixed"),
                       ("schedule", "arccos"), ("schedule", "cosine"), ("schedule", "linear"),
                       ("sampler", "random"), ("sampler", "confidence"), ("sampler", "halton"),
                       ("metric", "frechet"), ("metric", "prdc")]:
        info = reg.info(kind, name)
        assert info.distribution == "dimo"
        assert info.cls.Config.model_config["extra"] == "forbid"
    assert set(KINDS) >= {"teacher", "method", "divergence", "init", "schedule", "sampler", "discriminator",
                          "reward", "metric"}


def test_third_party_plugin_is_discovered(site):
    make_dist(site, "dimo-plugin-good", "good_plugin", GOOD)
    info = load_registry().info("divergence", "half_fkl")
    assert (info.distribution, info.version, info.plugin) == ("dimo-plugin-good", "1.2.3", "plug")


def test_broken_plugin_is_reported_and_the_rest_works(site, capsys):
    make_dist(site, "dimo-plugin-broken", "broken_plugin", "import not_a_module_anywhere\n")
    reg = load_registry()
    assert reg.info("method", "dimo")          # built-ins still there
    [failure] = reg.failures
    assert failure.plugin == "plug" and "dimo-plugin-broken" in failure.distribution
    assert "not_a_module_anywhere" in failure.error
    assert "dimo-plugin-broken" in capsys.readouterr().err


def test_blocked_and_autoload_switches(site, monkeypatch):
    make_dist(site, "dimo-plugin-good", "good_plugin", GOOD)
    monkeypatch.setenv(ENV_BLOCKED, "plug")
    assert "half_fkl" not in load_registry().names("divergence")
    monkeypatch.delenv(ENV_BLOCKED)
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "1")
    reg = load_registry()
    assert "half_fkl" not in reg.names("divergence") and "fkl" in reg.names("divergence")


def test_unknown_name_says_kind_valid_names_and_did_you_mean():
    reg = load_registry()
    with pytest.raises(UnknownPluginError) as exc:
        reg.get("divergence", "rkll")
    msg = str(exc.value)
    assert "unknown divergence 'rkll'" in msg and "Did you mean 'rkl'" in msg and "jeffrey" in msg


def test_plugin_without_strict_config_is_refused():
    from pydantic import BaseModel
    from registry.registry import Registry

    class Loose:
        class Config(BaseModel):
            x: int = 1

    with pytest.raises(TypeError, match="extra='forbid'"):
        Registry().add("divergence", "loose", Loose, plugin="p", distribution="d", version="1")


def test_cli_selection_uses_registry_did_you_mean():
    with pytest.raises(UserError, match="Did you mean 'dimo'"):
        resolve(["method=dimoo"])
