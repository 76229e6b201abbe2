"""The example teacher through dimo's plugin test kit: the declared interface, then pre-training (mdm),
Di[M]O distillation with evaluation, export, load and generation."""
import torch

from core.testing import check_teacher, run_method

TINY = {"dim": 16, "depth": 1, "heads": 2, "samples": 240}


def test_bars_fits_the_teacher_interface():
    teacher = check_teacher("bars", TINY)
    tokens, labels = teacher.dataset()
    assert tokens.shape == (240, 36) and int(tokens.max()) == 3
    # the evaluator's fixed classifier recognises the real data
    ev = teacher.evaluator()
    images, labels = ev.reference()
    assert (ev.logits(images).argmax(1) == labels).float().mean() > 0.9


def test_bars_pretrains_distils_evaluates_and_generates(tmp_path):
    teacher = run_method(tmp_path, "mdm", teacher="bars", teacher_config=TINY, steps=30, batch_size=32)
    assert teacher.teacher.has_weights()                     # mdm cached the pre-trained teacher
    run = run_method(tmp_path, "dimo", teacher="bars", teacher_config=TINY, steps=2, evaluate=True)
    rows = run.summary["rows"]
    assert {r["model"] for r in rows} == {"teacher", "student"}
    assert all(0 <= r["accuracy"] <= 1 and r["fd"] >= 0 for r in rows)
    assert run.samples[1].shape == (4, 36)


def test_bars_recipes_are_found_through_the_entry_point():
    from core.config import resolve_with_sources
    resolution = resolve_with_sources(["teacher=bars", "method=dimo"])
    assert resolution.recipe.name == "bars/dimo" and resolution.recipe.info.distribution == "dimo-teacher-example"
    assert resolution.config["trainer"]["steps"] == 300 and resolution.sources["method.lr_aux"] == "recipe bars/dimo"
