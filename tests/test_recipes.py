"""Recipes as data: YAML files per teacher x method, found through plugin entry points, inherited by method and
teacher subclasses, named on the command line; show-config says where each value comes from."""
import sys

import pytest
import yaml

from conftest import run_cli
from core.config import resolve, resolve_with_sources
from core.errors import UserError
from registry import get_registry
from registry.registry import load_registry
from test_registry import make_dist

THIRD_PARTY = """
    from pathlib import Path
    from plugins.methods.dimo import DiMO
    from registry import hookimpl

    class MyDiMO(DiMO):          # a recipe file of its own: digits/my_dimo.yaml
        pass

    class PlainDiMO(DiMO):       # none: inherits Di[M]O's
        pass

    @hookimpl
    def dimo_register(register):
        register("method", "my_dimo", MyDiMO)
        register("method", "plain_dimo", PlainDiMO)

    @hookimpl
    def dimo_recipes():
        return Path(__file__).parent / "my_recipes"
"""


@pytest.fixture
def third_party(tmp_path, monkeypatch, capsys):
    """An installed distribution shipping two DiMO subclasses and a recipes folder, as the registry: (its
    recipes folder, what loading it printed)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    make_dist(tmp_path, "dimo-recipes-mine", "recipes_plugin", THIRD_PARTY)
    folder = tmp_path / "my_recipes" / "digits"
    folder.mkdir(parents=True)
    (folder / "my_dimo.yaml").write_text("extends: dimo\ntrainer: {steps: 123}\nmethod: {cfg_scale: 3.0}\n")
    (folder / "dimo.yaml").write_text("trainer: {steps: 1}\n")    # the built-in digits/dimo keeps its name
    monkeypatch.setattr("registry.registry._REGISTRY", load_registry())
    yield folder, capsys.readouterr().err
    sys.modules.pop("recipes_plugin", None)


def test_a_subclass_inherits_and_a_third_party_recipe_file_is_found(third_party, capsys):
    from core.run import cmd_plugins
    folder, printed = third_party
    assert "recipe 'digits/dimo' from dimo-recipes-mine ignored" in printed
    info = get_registry().recipes["digits/my_dimo"]
    assert (info.distribution, info.plugin, info.path) == ("dimo-recipes-mine", "plug", folder / "my_dimo.yaml")
    cmd_plugins([])
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["recipe", "digits/my_dimo", "dimo-recipes-mine", "1.2.3", "plug"] in listed

    dimo = resolve(["method=dimo"])
    assert dimo["trainer"]["steps"] == 800                                    # the built-in recipe, not the copy
    plain = resolve_with_sources(["method=plain_dimo"])
    assert plain.recipe.name == "digits/dimo"                                 # inherited through DiMO.recipe
    assert plain.config["method"] == {**dimo["method"], "name": "plain_dimo"}

    mine = resolve_with_sources(["method=my_dimo"])
    assert mine.recipe.name == "digits/my_dimo"                               # its own file wins
    assert mine.config["trainer"]["steps"] == 123 and mine.config["method"]["cfg_scale"] == 3.0
    assert mine.config["method"]["lr_generator"] == dimo["method"]["lr_generator"]   # extends: dimo
    assert mine.sources["trainer.steps"] == mine.sources["method.lr_generator"] == "recipe digits/my_dimo"


def test_a_teacher_subclass_inherits_its_parents_recipes(monkeypatch):
    from plugins.teachers.digits import DigitsTeacher
    from registry.registry import PluginInfo

    class MyDigits(DigitsTeacher):
        pass

    monkeypatch.setitem(get_registry().entries["teacher"], "my_digits", PluginInfo(
        "teacher", "my_digits", MyDigits, "fake", "fake-dist", "1.0"))
    mine, builtin = resolve(["teacher=my_digits"]), resolve([])
    assert mine["trainer"] == builtin["trainer"] and mine["method"] == builtin["method"]


def test_show_config_says_where_each_value_comes_from(tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("method: {cfg_scale: 3.0}\ndivergence: rkl\n")
    args = [f"config={run_yaml}", "trainer.batch_size=8", "divergence.name=jeffrey"]
    shown = run_cli("show-config", *args)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert yaml.safe_load(shown.stdout) == resolve(args)                       # still the config, as YAML
    comment = comments(shown.stdout)
    assert comment["trainer.batch_size"] == "command line"                     # over the recipe's 32
    assert comment["trainer.steps"] == "recipe digits/dimo"
    assert comment["method.cfg_scale"] == f"file {run_yaml}"                   # over the recipe's 2.0
    assert comment["trainer.seed"] == "default"
    assert shown.stdout.splitlines()[0].startswith("# recipe: digits/dimo (")
    sources = resolve_with_sources(args).sources
    assert (sources["divergence.name"], sources["sampler.cfg_scale"], sources["method.adam_eps"]) == (
        "command line", "recipe digits/dimo", "default")


def comments(shown: str) -> dict[str, str]:
    """section.field -> the comment of its line in show-config's output (fields one level deep)."""
    out, section = {}, None
    for line in shown.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            section = line[:-1]
        elif line.startswith("  ") and "# " in line:
            out[f"{section}.{line.split(':')[0].strip()}"] = line.rsplit("# ", 1)[1]
    return out


def test_recipe_on_the_command_line():
    assert resolve(["recipe=none"])["trainer"]["steps"] == 1000               # core defaults only
    soft = resolve(["method=soft_dimo", "recipe=dimo"])                        # another recipe of this teacher
    assert soft["trainer"]["steps"] == 800 and soft["method"]["w_gan"] == 1.0   # Di[M]O's values, no GAN recipe
    assert resolve(["method=soft_dimo", "recipe=digits/dimo"]) == soft
    with pytest.raises(UserError) as err:
        resolve(["recipe=sofft_dimo"])
    message = str(err.value)
    assert "unknown recipe 'sofft_dimo'" in message and "Did you mean 'soft_dimo'" in message
    assert "di4c, dimo, mdm, redi, sdtt, soft_dimo" in message and "maskgit/dimo" in message
    with pytest.raises(UserError, match="recipe takes a name"):
        resolve(["recipe.steps=3"])


def test_every_builtin_recipe_resolves_with_its_teacher_and_method():
    reg = get_registry()
    for name, info in reg.recipes.items():
        teacher, method = name.split("/")
        assert info.distribution == "dimo" and method in reg.names("method"), name
        resolution = resolve_with_sources([f"teacher={teacher}", f"method={method}"])
        assert resolution.recipe.name == name


def test_bad_recipe_files_are_clear_errors(tmp_path, monkeypatch):
    reg = load_registry()
    folder = tmp_path / "digits"
    folder.mkdir()
    (folder / "loop_a.yaml").write_text("extends: loop_b\n")
    (folder / "loop_b.yaml").write_text("extends: loop_a\n")
    (folder / "picks.yaml").write_text("method: {name: sdtt}\n")
    (folder / "orphan.yaml").write_text("extends: nowhere\n")
    (folder / "stray.yaml").write_text("discriminator: trunk\n")
    reg.add_recipes(tmp_path, plugin="plug", distribution="dimo-bad", version="1.0")
    monkeypatch.setattr("registry.registry._REGISTRY", reg)
    for recipe, message in [("loop_a", "extend each other: digits/loop_a -> digits/loop_b -> digits/loop_a"),
                            ("picks", "method.name is set"),
                            ("orphan", "extends 'digits/nowhere', which is not an installed recipe"),
                            ("stray", "sets discriminator, which method 'dimo' does not use")]:
        with pytest.raises(UserError, match=message):
            resolve([f"recipe={recipe}"])


def test_extends_keeps_fields_of_the_same_plugin_only():
    from core.recipes import inherit
    base = {"sampler": {"name": "amused", "cfg_scale": 10.0}, "method": {"lr": 1.0, "ema_decay": 0.9}}
    out = inherit(base, {"sampler": {"name": "maskgen"}, "method": {"lr": 2.0}})
    assert out == {"sampler": {"name": "maskgen"}, "method": {"lr": 2.0, "ema_decay": 0.9}}
    assert inherit(base, {"sampler": {"cfg_scale": 9.0}})["sampler"] == {"name": "amused", "cfg_scale": 9.0}
