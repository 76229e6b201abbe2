"""Prompt sets (built-in list, files, the HPS v2 benchmark through the hpsv2 package) and the cached text
conditioner that text-to-image teachers share between their network copies."""
import copy
import json
import sys
import types

import pytest
import torch

from core.errors import UserError
from plugins.prompts import (BUILTIN_PROMPTS, HPS_STYLES, PromptsConfig, TextConditioner, load_prompts)


def test_builtin_limit_and_negative():
    s = load_prompts(PromptsConfig(limit=3), default_negative="neg")
    assert s.prompts == list(BUILTIN_PROMPTS[:3]) and s.null_index == 3
    assert s.texts(torch.tensor([2, 3])) == [BUILTIN_PROMPTS[2], "neg"]
    assert load_prompts(PromptsConfig(negative=""), default_negative="neg").negative == ""
    with pytest.raises(IndexError, match="outside the prompt set"):
        s.text(4)


def test_prompt_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("# captions\na cat\n\n  a dog  \n")
    assert load_prompts(PromptsConfig(source=str(txt))).prompts == ["a cat", "a dog"]
    js = tmp_path / "p.json"
    js.write_text(json.dumps(["x", " ", "y"]))
    assert load_prompts(PromptsConfig(source=str(js))).prompts == ["x", "y"]
    js.write_text(json.dumps({"prompts": ["x"]}))
    with pytest.raises(UserError, match="list of strings"):
        load_prompts(PromptsConfig(source=str(js)))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UserError, match="holds no prompts"):
        load_prompts(PromptsConfig(source=str(tmp_path / "empty.txt")))
    with pytest.raises(UserError, match="neither builtin, hpsv2"):
        load_prompts(PromptsConfig(source=str(tmp_path / "missing.txt")))


def test_hpsv2_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "hpsv2", None)   # import hpsv2 -> ImportError
    with pytest.raises(UserError, match="pip install hpsv2"):
        load_prompts(PromptsConfig(source="hpsv2"))
    with pytest.raises(ValueError, match="unknown HPS v2 style"):
        PromptsConfig(source="hpsv2:cartoon")


def test_hpsv2_prompts_and_styles(monkeypatch):
    """hpsv2.benchmark_prompts(style) returns that style's prompts (a dict for 'all' in some versions)."""
    fake = types.SimpleNamespace(benchmark_prompts=lambda s: {s: [f"{s} {i}" for i in range(3)]} if s == "photo"
                                 else [f"{s} {i}" for i in range(3)])
    monkeypatch.setitem(sys.modules, "hpsv2", fake)
    s = load_prompts(PromptsConfig(source="hpsv2"))
    assert len(s.prompts) == 3 * len(HPS_STYLES) and s.styles[:3] == ["anime"] * 3 and s.styles[-1] == "photo"
    assert load_prompts(PromptsConfig(source="hpsv2:photo")).prompts == ["photo 0", "photo 1", "photo 2"]


def test_hpsv2_cached_files_are_read_first(monkeypatch, tmp_path):
    bench = tmp_path / "datasets" / "benchmark"
    bench.mkdir(parents=True)
    (bench / "anime.json").write_text(json.dumps(["cached anime"]))
    def offline(style):
        raise ConnectionError("offline")
    monkeypatch.setitem(sys.modules, "hpsv2", types.SimpleNamespace(root_path=str(tmp_path), benchmark_prompts=offline))
    assert load_prompts(PromptsConfig(source="hpsv2:anime")).prompts == ["cached anime"]
    with pytest.raises(UserError, match="zhwang/HPDv2.*offline"):
        load_prompts(PromptsConfig(source="hpsv2:photo"))


def test_conditioner_caches_per_prompt_and_is_shared_by_deepcopy():
    calls = []

    def encode(texts, device):
        calls.append(list(texts))
        return {"hidden": torch.stack([torch.full((2, 3), float(len(t))) for t in texts]),
                "pooled": torch.tensor([[float(len(t))] for t in texts])}

    prompts = load_prompts(PromptsConfig(limit=2), default_negative="")
    text = TextConditioner(prompts, encode)
    out = text(torch.tensor([1, 2, 1]))
    assert out["hidden"].shape == (3, 2, 3) and out["pooled"][:, 0].tolist() == [len(BUILTIN_PROMPTS[1]), 0, len(BUILTIN_PROMPTS[1])]
    holder = torch.nn.Module()
    holder.text = text
    assert copy.deepcopy(holder).text is text
    text(torch.tensor([0, 2]))
    assert calls == [[BUILTIN_PROMPTS[1], ""], [BUILTIN_PROMPTS[0]]]
    with pytest.raises(IndexError, match="outside the prompt set"):
        text(torch.tensor([3]))


def test_hps_metric_averages_the_style_means(monkeypatch):
    """HPS v2.1 per style and overall as the mean of the style means (the benchmark's average)."""
    import plugins.rewards
    from core.interfaces import EvalData, Samples
    from plugins.prompts import PromptSet
    from plugins.t2i_metrics import TextImageEvaluator
    from registry.registry import build

    class FakeHPS:
        Config = plugins.rewards.HPSReward.Config

        def __init__(self, config):
            self.config = config

        def __call__(self, images, cond, evaluator):   # score = 0.1 * prompt index
            return 0.1 * cond.float()

    monkeypatch.setattr(plugins.rewards, "HPSReward", FakeHPS)
    prompts = PromptSet(["a0", "a1", "p0"], styles=["anime", "anime", "photo"])
    labels = torch.tensor([0, 1, 1, 2])
    data = EvalData(None, None, samples=Samples(torch.zeros(4, 3, 2, 2), labels),
                    evaluator=TextImageEvaluator(prompts, ("hps",)))
    out = build("metric", "hps", {"batch_size": 3}).compute(data)
    anime, photo = 100 * (0.0 + 0.1 + 0.1) / 3, 100 * 0.2
    assert out == pytest.approx({"hps_anime": anime, "hps_photo": photo, "hps": (anime + photo) / 2})
    plain = EvalData(None, None, samples=Samples(torch.zeros(4, 3, 2, 2), labels),
                     evaluator=TextImageEvaluator(PromptSet(["a0", "a1", "p0"]), ("hps",)))
    assert build("metric", "hps").compute(plain) == pytest.approx({"hps": 100 * 0.4 / 4})


def test_grids_show_prompts_under_their_rows(tmp_path):
    from PIL import Image
    from core.images import save_grid
    images, labels = torch.rand(6, 3, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2])
    plain = save_grid(images, labels, tmp_path / "plain.png", per_class=2)
    captioned = save_grid(images, labels, tmp_path / "captioned.png", per_class=2,
                          captions=["a red apple", "a lighthouse", "an astronaut"])
    w, h = Image.open(plain).size
    cw, ch = Image.open(captioned).size
    assert ch > h   # rows spaced for their captions (matplotlib figure), the plain grid unchanged
    only_two = save_grid(images, labels, tmp_path / "two.png", per_class=2, captions=["a", "b", "c"],
                         max_captioned_rows=2)
    assert Image.open(only_two).size[1] < ch
