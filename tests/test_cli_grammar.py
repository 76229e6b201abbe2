"""The one key=value grammar of every entry point (core.cli)."""
import pytest

from core.cli import check_keys, parse_kv
from core.errors import UserError


def test_dotted_keys_nest_and_yaml_values_parse():
    out = parse_kv(["n=8", "tteo.seeds=4", "tteo.rewards=[{name: clip, weight: 2}]", "steps=null"])
    assert out == {"n": "8", "tteo": {"seeds": "4", "rewards": [{"name": "clip", "weight": 2}]}, "steps": None}


def test_flat_keys_stay_whole_and_errors_name_the_argument():
    assert parse_kv(["only=a,b", "teacher.arch.dim=32"], flat={"only"}) == {"only": "a,b",
                                                                            "teacher": {"arch": {"dim": "32"}}}
    with pytest.raises(UserError, match="'oops' is not of the form key=value"):
        parse_kv(["oops"])
    with pytest.raises(UserError, match="'n' is a value, not a section"):
        parse_kv(["n=1", "n.x=2"])
    with pytest.raises(UserError, match="unknown option\\(s\\) bad; valid: run, seeds"):
        check_keys({"bad": 1}, {"run": None, "seeds": 3}, "digits_table2")


def test_benchmarks_run_parses_with_the_same_grammar():
    from benchmarks.run import parse
    opts, overrides = parse(["suite=digits", "force=true", "teacher.checkpoint=/w.safetensors", "seeds=[1, 2]"])
    assert opts["suite"] == "digits" and opts["force"] == "true"
    assert overrides == {"__teacher__": {"checkpoint": "/w.safetensors"}, "seeds": [1, 2]}


def test_the_shared_option_helpers_name_the_key_and_what_is_valid(capsys):
    import pytest

    from core.cli import device_option, int_option, run_subcommand
    from core.errors import UserError
    opts = {"batch_size": "8", "seed": "-1"}
    assert int_option(opts, "batch_size", 50) == 8 and "batch_size" not in opts
    assert int_option(opts, "limit", None) is None and int_option({}, "steps", 16) == 16
    with pytest.raises(UserError, match=r"seed='-1' is not an integer >= 0"):
        int_option(opts, "seed", 0, minimum=0)
    with pytest.raises(UserError, match="device='tpu' is not one of: auto, cpu, cuda"):
        device_option("tpu")
    assert device_option("cpu").type == "cpu"

    def fails(args):
        raise UserError(f"bad {args}")
    assert run_subcommand(["-h"], {"go": fails}, "usage: tool go") == 0
    assert run_subcommand([], {"go": fails}, "usage: tool go") == 2
    assert run_subcommand(["go", "x=1"], {"go": fails}, "usage") == 2
    out = capsys.readouterr()
    assert out.out.count("usage: tool go") == 2 and "dimo: error: bad ['x=1']" in out.err
