"""GenEval: the official prompts as a prompt set, the official scoring rules on synthetic detections, the detector
interface (mmdet's Mask2Former is optional: its absence is a clear error), the CLIP colour classifier, and the
``geneval`` metric end to end on a tiny aMUSEd teacher with a test detector registered by the test."""
import numpy as np
import pytest
import torch

from core.errors import UserError
from plugins.geneval import DETECTORS, Detection, Detector, GenEvalConfig, geneval_metadata
from plugins.geneval.rules import (COLORS, Thresholds, box_iou, judge, keep_detections, relations, score_image,
                                   summarize)

def det(label, score=0.95, box=(0, 0, 10, 10), mask=None):
    return Detection(label, score, tuple(float(v) for v in box), mask)


def row(prompt: str) -> dict:
    """The official metadata row of ``prompt``."""
    found = [m for m in geneval_metadata() if m["prompt"] == prompt]
    assert len(found) == 1, prompt
    return found[0]


# ---------------------------------------------------------------------------------------------------
# the prompts (data copied from the official repository)
# ---------------------------------------------------------------------------------------------------

def test_the_official_prompts_and_their_tags():
    from collections import Counter

    from plugins.prompts import PromptsConfig, load_prompts
    rows = geneval_metadata()
    assert len(rows) == 553
    assert Counter(r["tag"] for r in rows) == {"position": 100, "color_attr": 100, "two_object": 99, "colors": 94,
                                                "single_object": 80, "counting": 80}
    names = {line.strip() for line in open("plugins/geneval/object_names.txt")}
    assert len(names) == 80 and {c["class"] for r in rows for c in r["include"]} <= names
    prompts = load_prompts(PromptsConfig(source="geneval"))
    assert prompts.prompts == [r["prompt"] for r in rows] and prompts.metadata == rows and prompts.styles is None
    counting = load_prompts(PromptsConfig(source="geneval:counting", limit=5))
    assert len(counting.prompts) == len(counting.metadata) == 5
    assert {m["tag"] for m in counting.metadata} == {"counting"}
    assert counting.metadata[0]["prompt"] == counting.prompts[0]
    with pytest.raises(ValueError, match="unknown GenEval tag 'shapes'"):
        PromptsConfig(source="geneval:shapes")


# ---------------------------------------------------------------------------------------------------
# the rules
# ---------------------------------------------------------------------------------------------------

def test_iou_uses_inclusive_pixels():
    assert box_iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1
    assert box_iou((0, 0, 9, 9), (10, 10, 19, 19)) == 0
    assert box_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)


def test_detections_kept_above_the_threshold_most_confident_first():
    dets = [det("cow", 0.3), det("cow", 0.5), det("cow", 0.95), det("bench", 0.1), det("cow", 0.89)]
    kept = keep_detections(dets, "single_object")
    assert list(kept) == ["cow"] and [d.score for d in kept["cow"]] == [0.95, 0.89, 0.5]   # 0.3 is not above 0.3
    assert [d.score for d in keep_detections(dets, "counting")["cow"]] == [0.95]            # counting: above 0.9
    many = [det("cow", 0.5 + i / 100) for i in range(20)]
    assert len(keep_detections(many, "two_object")["cow"]) == 16
    assert len(keep_detections(many, "two_object", Thresholds(max_objects=3))["cow"]) == 3
    # overlap suppression is off by default; with max_overlap < 1 a box overlapping a better one goes
    twins = [det("cow", 0.9, (0, 0, 9, 9)), det("cow", 0.8, (1, 0, 10, 9)), det("cow", 0.7, (50, 50, 60, 60))]
    assert len(keep_detections(twins, "two_object")["cow"]) == 3
    assert [d.score for d in keep_detections(twins, "two_object", Thresholds(max_overlap=0.5))["cow"]] == [0.9, 0.7]


@pytest.mark.parametrize("a, b, expected", [
    ((0, 0, 10, 10), (50, 0, 60, 10), {"left of"}),
    ((50, 0, 60, 10), (0, 0, 10, 10), {"right of"}),
    ((0, 0, 10, 10), (0, 50, 10, 60), {"above"}),              # image y points down
    ((0, 50, 10, 60), (0, 0, 10, 10), {"below"}),
    ((0, 0, 10, 10), (50, 50, 60, 60), {"left of", "above"}),  # diagonal: (50 - 2) / 70.7 = 0.68 on both axes
    ((0, 0, 10, 10), (40, 30, 50, 40), {"left of", "above"}),  # (40 - 2) / 50 = 0.76, (30 - 2) / 50 = 0.56
    ((0, 0, 10, 10), (60, 20, 70, 30), {"left of"}),           # (20 - 2) / 63.2 = 0.28: not above
    ((0, 0, 10, 10), (12, 0, 22, 10), {"left of"}),            # (12 - 0.1 * 20) / 12 = 0.83
    ((0, 0, 100, 100), (30, 0, 130, 100), set()),              # (30 - 20) / 30 = 0.33: too close for the sizes
    ((0, 0, 10, 10), (0, 0, 10, 10), set()),                   # same place
])
def test_relations_between_box_centres(a, b, expected):
    assert relations(a, b) == expected


def test_relation_margin_is_relative_to_the_box_sizes():
    a, b = (0, 0, 10, 10), (16, 0, 26, 10)          # offset 16, box widths 20
    assert relations(a, b, margin=0.1) == {"left of"}     # (16 - 2) / 16 = 0.875
    assert relations(a, b, margin=0.5) == set()           # (16 - 10) / 16 = 0.375
    assert relations(a, b, margin=0.8) == set()           # shrunk to 0: no relation


def fixed_colors(table):
    """A colour classifier answering from ``table[(label, score)]`` (the objects' own colours)."""
    calls = []

    def colors_of(objects, name):
        calls.append((name, len(objects)))
        return [table[(o.label, o.score)] for o in objects]
    colors_of.calls = calls
    return colors_of


def test_single_and_two_objects():
    bench = row("a photo of a bench")
    assert judge(bench, keep_detections([det("bench")], "single_object")) == (True, [])
    ok, why = judge(bench, keep_detections([det("cow")], "single_object"))
    assert not ok and why == ["expected bench>=1, found 0"]
    pair = next(m for m in geneval_metadata("two_object"))
    a, b = (c["class"] for c in pair["include"])
    assert score_image(pair, [det(a), det(b, 0.4)])[0]
    assert not score_image(pair, [det(a), det(b, 0.2)])[0]        # below 0.3: not counted
    assert not score_image(pair, [det(b)])[0]


def test_counting_needs_the_count_and_excludes_more():
    two = row("a photo of two backpacks")
    assert two["include"] == [{"class": "backpack", "count": 2}]
    assert two["exclude"] == [{"class": "backpack", "count": 3}]
    packs = [det("backpack", s) for s in (0.99, 0.98, 0.97)]
    assert score_image(two, packs[:2]) == (True, [])
    ok, why = score_image(two, packs)
    assert not ok and why == ["expected backpack<3, found 3"]
    assert not score_image(two, packs[:1])[0]
    # counting uses the 0.9 threshold: a third backpack at 0.8 neither helps nor hurts
    assert score_image(two, packs[:2] + [det("backpack", 0.8)])[0]
    assert not score_image(two, packs[:1] + [det("backpack", 0.8)])[0]


def test_colors_are_checked_on_the_most_confident_objects():
    purple = row("a photo of a purple potted plant")
    plants = [det("potted plant", 0.9), det("potted plant", 0.8)]
    colors = fixed_colors({("potted plant", 0.9): "purple", ("potted plant", 0.8): "green"})
    assert score_image(purple, plants, colors) == (True, [])
    assert colors.calls == [("potted plant", 1)]                   # only the top `count` objects are classified
    colors = fixed_colors({("potted plant", 0.9): "green", ("potted plant", 0.8): "purple"})
    ok, why = score_image(purple, plants, colors)
    assert not ok and why[0].startswith("expected purple potted plant>=1, found 0 purple")
    nothing = fixed_colors({})
    assert not score_image(purple, [], nothing)[0] and nothing.calls == []   # no object: no colour asked
    with pytest.raises(ValueError, match="colour classifier"):
        score_image(purple, plants)


def test_color_attribution_needs_each_object_in_its_colour():
    meta = row("a photo of a purple tennis racket and a black sink")
    objs = [det("tennis racket", 0.9), det("sink", 0.8)]
    right = fixed_colors({("tennis racket", 0.9): "purple", ("sink", 0.8): "black"})
    swapped = fixed_colors({("tennis racket", 0.9): "black", ("sink", 0.8): "purple"})
    assert score_image(meta, objs, right)[0]
    assert not score_image(meta, objs, swapped)[0]
    assert set(COLORS) >= {"purple", "black"}


@pytest.mark.parametrize("prompt, target_box, obj_box, ok", [
    ("a photo of a bird below a skateboard", (0, 0, 10, 10), (0, 40, 10, 50), True),
    ("a photo of a bird below a skateboard", (0, 40, 10, 50), (0, 0, 10, 10), False),
    ("a photo of a zebra right of a parking meter", (0, 0, 10, 10), (40, 0, 50, 10), True),
    ("a photo of a zebra right of a parking meter", (40, 0, 50, 10), (0, 0, 10, 10), False),
])
def test_position_of_the_second_object_relative_to_the_first(prompt, target_box, obj_box, ok):
    meta = row(prompt)
    target, obj = meta["include"][0]["class"], meta["include"][1]["class"]
    assert meta["include"][1]["position"][1] == 0
    correct, why = score_image(meta, [det(target, 0.9, target_box), det(obj, 0.9, obj_box)])
    assert correct == ok and (ok or why[0].startswith(f"expected {obj} {meta['include'][1]['position'][0]} target"))


def test_every_relation_in_the_official_prompts():
    """Each relation word of the position prompts is satisfied by a layout built for it, and refused by the
    mirrored layout."""
    place = {"left of": ((40, 0, 50, 10), (0, 0, 10, 10)), "right of": ((0, 0, 10, 10), (40, 0, 50, 10)),
             "above": ((0, 40, 10, 50), (0, 0, 10, 10)), "below": ((0, 0, 10, 10), (0, 40, 10, 50))}
    seen = set()
    for meta in geneval_metadata("position"):
        relation = meta["include"][1]["position"][0]
        seen.add(relation)
        target, obj = meta["include"][0]["class"], meta["include"][1]["class"]
        target_box, obj_box = place[relation]
        assert score_image(meta, [det(target, 0.9, target_box), det(obj, 0.8, obj_box)])[0], meta
        assert not score_image(meta, [det(target, 0.9, obj_box), det(obj, 0.8, target_box)])[0], meta
    assert seen == {"left of", "right of", "above", "below"}


def test_position_needs_a_matched_target_and_checks_every_pair():
    meta = {"tag": "position", "include": [{"class": "cow", "count": 1},
                                           {"class": "bench", "count": 1, "position": ["left of", 0]}]}
    ok, why = score_image(meta, [det("bench", 0.9, (0, 0, 10, 10))])
    assert not ok and why == ["expected cow>=1, found 0", "no target for bench to be left of"]
    # a colour failure of the target also leaves the position clause without a target
    coloured = {"tag": "position", "include": [{"class": "cow", "count": 1, "color": "red"},
                                               {"class": "bench", "count": 1, "position": ["left of", 0]}]}
    objs = [det("cow", 0.9, (40, 0, 50, 10)), det("bench", 0.9, (0, 0, 10, 10))]
    assert score_image(coloured, objs, fixed_colors({("cow", 0.9): "red"}))[0]
    ok, why = score_image(coloured, objs, fixed_colors({("cow", 0.9): "blue"}))
    assert not ok and why[-1] == "no target for bench to be left of"
    # two targets (count 2): the object must be left of both
    two = {"tag": "position", "include": [{"class": "cow", "count": 2},
                                          {"class": "bench", "count": 1, "position": ["left of", 0]}]}
    cows = [det("cow", 0.9, (40, 0, 50, 10)), det("cow", 0.8, (-40, 0, -30, 10))]
    assert not score_image(two, cows + [det("bench", 0.9, (0, 0, 10, 10))])[0]
    assert score_image(two, cows[:1] + [det("cow", 0.8, (80, 0, 90, 10)), det("bench", 0.9, (0, 0, 10, 10))])[0]


def test_exclude_clauses_count_every_kept_object():
    meta = {"tag": "two_object", "include": [{"class": "cow", "count": 1}], "exclude": [{"class": "bench", "count": 1}]}
    assert score_image(meta, [det("cow"), det("bench", 0.2)])[0]        # not kept: not counted
    ok, why = score_image(meta, [det("cow"), det("bench", 0.5)])
    assert not ok and why == ["expected bench<1, found 1"]


def test_overall_is_the_mean_of_the_tag_accuracies():
    out = summarize([("single_object", True), ("single_object", True), ("single_object", False),
                     ("counting", False), ("position", True)])
    assert out == pytest.approx({"geneval_single_object": 2 / 3, "geneval_counting": 0.0, "geneval_position": 1.0,
                                 "geneval": (2 / 3 + 0 + 1) / 3})
    assert summarize([]) == {}


# ---------------------------------------------------------------------------------------------------
# detectors and the colour classifier
# ---------------------------------------------------------------------------------------------------

def test_mask2former_without_mmdet_names_what_to_install(monkeypatch, tmp_path):
    import sys

    from plugins.geneval import build_detector
    monkeypatch.setitem(sys.modules, "mmdet", None)   # absent, whatever this machine has
    with pytest.raises(UserError) as err:
        build_detector(GenEvalConfig(checkpoint=str(tmp_path / "m2f.pth")), torch.device("cpu"))
    msg = str(err.value)
    for needed in ("mmdet", "mmcv-full==1.7.1", "mmdet==2.28.2", "openmim",
                   "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth",
                   "teacher.eval_geneval.checkpoint"):
        assert needed in msg, needed
    with pytest.raises(UserError, match="detector='yolo' is unknown; valid: .*mask2former"):
        build_detector(GenEvalConfig(detector="yolo"), torch.device("cpu"))
    with pytest.raises(UserError, match="cannot be imported"):
        build_detector(GenEvalConfig(detector="no_such_module:Thing"), torch.device("cpu"))
    with pytest.raises(UserError, match="not a subclass"):
        build_detector(GenEvalConfig(detector="plugins.geneval.rules:Detection"), torch.device("cpu"))


def test_mask2former_checkpoint_is_checked_before_loading(monkeypatch, tmp_path):
    """With mmdet importable (a stand-in module here), a missing checkpoint names the file to download."""
    import sys
    import types

    from plugins.geneval import build_detector
    fake = types.ModuleType("mmdet")
    fake.__file__ = str(tmp_path / "mmdet" / "__init__.py")
    apis = types.ModuleType("mmdet.apis")
    apis.inference_detector = apis.init_detector = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "mmdet", fake)
    monkeypatch.setitem(sys.modules, "mmdet.apis", apis)
    with pytest.raises(UserError, match="checkpoint=None.*download https://download.openmmlab.com"):
        build_detector(GenEvalConfig(), torch.device("cpu"))
    ckpt = tmp_path / "m2f.pth"
    ckpt.write_bytes(b"")
    with pytest.raises(UserError, match="no configs/mask2former/.*mmdet_config"):
        build_detector(GenEvalConfig(checkpoint=str(ckpt)), torch.device("cpu"))


def test_mask2former_adapter_drives_mmdet(monkeypatch, tmp_path):
    """The adapter with a stand-in mmdet: the config found in the installed package's .mim/configs, the checkpoint
    and device handed to init_detector, the image handed over as BGR, the 2.x result read per class name."""
    import sys
    import types

    from plugins.geneval import build_detector
    from plugins.geneval.config import MASK2FORMER
    root = tmp_path / "site" / "mmdet"
    config = root / ".mim" / "configs" / "mask2former" / f"{MASK2FORMER}.py"
    config.parent.mkdir(parents=True)
    config.write_text("# mmdet config\n")
    ckpt = tmp_path / f"{MASK2FORMER}.pth"
    ckpt.write_bytes(b"weights")
    calls = {}

    def init_detector(cfg, checkpoint, device):
        calls["init"] = (cfg, checkpoint, device)
        return "model"

    def inference_detector(model, image):
        calls["image"] = image
        bbox = [np.zeros((0, 5), np.float32) for _ in range(80)]
        bbox[15] = np.array([[1, 1, 3, 3, 0.8]], np.float32)              # class 15: cat
        return bbox, [[np.ones((4, 4), bool)] if c == 15 else [] for c in range(80)]
    fake, apis = types.ModuleType("mmdet"), types.ModuleType("mmdet.apis")
    fake.__file__ = str(root / "__init__.py")
    apis.init_detector, apis.inference_detector = init_detector, inference_detector
    monkeypatch.setitem(sys.modules, "mmdet", fake)
    monkeypatch.setitem(sys.modules, "mmdet.apis", apis)
    detector = build_detector(GenEvalConfig(checkpoint=str(ckpt)), torch.device("cpu"))
    assert calls["init"] == (str(config), str(ckpt), "cpu")
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0] = 255                                                    # red in RGB
    (found,) = detector.detect(image)
    assert (calls["image"][..., 2] == 255).all() and (calls["image"][..., 0] == 0).all()   # BGR
    assert found.label == "cat" and found.score == pytest.approx(0.8) and found.mask.all()
    explicit = tmp_path / "my_config.py"
    explicit.write_text("")
    build_detector(GenEvalConfig(checkpoint=str(ckpt), mmdet_config=str(explicit)), torch.device("cpu"))
    assert calls["init"][0] == str(explicit)


def test_mmdet_results_become_detections():
    from types import SimpleNamespace

    from plugins.geneval.detector import mmdet_detections, object_names
    names = object_names()
    assert len(names) == 80 and names[0] == "person" and names[9] == "traffic light"
    bbox = [np.zeros((0, 5), np.float32) for _ in names]
    bbox[2] = np.array([[1, 2, 3, 4, 0.9], [5, 6, 7, 8, 0.4]], np.float32)
    segm = [[] for _ in names]
    segm[2] = [np.eye(4, dtype=bool), np.ones((4, 4), bool)]
    dets = mmdet_detections((bbox, segm), names)                         # mmdet 2.x
    assert [(d.label, round(d.score, 3), d.box) for d in dets] == [("car", 0.9, (1, 2, 3, 4)),
                                                                    ("car", 0.4, (5, 6, 7, 8))]
    assert dets[0].mask.dtype == bool and dets[0].mask[0, 0] and not dets[0].mask[0, 1]
    assert mmdet_detections(bbox, names)[0].mask is None                 # boxes only
    inst = SimpleNamespace(bboxes=torch.tensor([[1., 2, 3, 4]]), scores=torch.tensor([0.7]),
                           labels=torch.tensor([9]), masks=torch.ones(1, 4, 4, dtype=torch.bool))
    (d,) = mmdet_detections(SimpleNamespace(pred_instances=inst), names)  # mmdet 3.x
    assert d.label == "traffic light" and d.box == (1, 2, 3, 4) and d.mask.all()
    with pytest.raises(ValueError, match="80"):
        mmdet_detections(bbox[:3], names)


def test_object_crops_fill_outside_the_mask_with_grey():
    from plugins.geneval.detector import object_crop
    image = np.full((8, 8, 3), 200, np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    crop = object_crop(image, det("cow", box=(1, 1, 5, 5), mask=mask))
    assert crop.shape == (4, 4, 3)
    assert (crop[1:3, 1:3] == 200).all() and (crop[0] == 153).all()       # "#999"
    assert (object_crop(image, det("cow", box=(1, 1, 5, 5), mask=mask), "original") == 200).all()
    assert object_crop(image, det("cow", box=(2, 2, 2, 2))).shape == (1, 1, 3)   # never empty


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from test_amused import tiny_clip_reward_folder
    return tiny_clip_reward_folder(tmp_path_factory.mktemp("clip"))


def test_clip_colour_classifier_is_the_zero_shot_argmax(clip_folder):
    import torch.nn.functional as F

    from plugins.geneval.detector import TEMPLATES, ClipColorClassifier, object_crop
    from plugins.rewards import HFClipReward, clip_pixels
    clf = ClipColorClassifier(str(clip_folder), torch.device("cpu"))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    objs = [det("cow", box=(0, 0, 8, 8)), det("cow", box=(4, 4, 16, 12))]
    got = clf(image, objs, "cow")
    assert len(got) == 2 and set(got) <= set(COLORS)
    # the same computed by hand: per colour, the normalised mean of the three normalised template features
    clip = HFClipReward(HFClipReward.Config(model=str(clip_folder)))
    model = clip._model(torch.device("cpu"))
    with torch.no_grad():
        weights = torch.stack([F.normalize(clip.text_features([t.format(color=c, name="cow") for t in TEMPLATES],
                                                              "cpu").mean(0), dim=-1) for c in COLORS])
        pixels = torch.cat([clip_pixels(torch.from_numpy(object_crop(image, o).copy()).permute(2, 0, 1)[None] / 255,
                                        clip.image_size(model)) for o in objs])
        feats = F.normalize(clip.encode_image(pixels).float(), dim=-1)
    assert got == [COLORS[int(i)] for i in (feats @ weights.T).argmax(1)]
    assert TEMPLATES[1].format(color="red", name="cow") == "a photo of a red-colored cow"


# ---------------------------------------------------------------------------------------------------
# the metric
# ---------------------------------------------------------------------------------------------------

class ScriptedDetector(Detector):
    """A test detector: finds the objects listed for the image's mean grey level (rounded to 0.1)."""
    script: dict = {}

    def detect(self, image):
        return list(self.script.get(round(float(image.mean()) / 255, 1), []))


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setitem(DETECTORS, "scripted", ScriptedDetector)
    monkeypatch.setattr(ScriptedDetector, "script", {})
    return ScriptedDetector


def test_the_metric_scores_each_tag_and_the_overall_mean(scripted):
    from core.interfaces import EvalData, Samples
    from plugins.prompts import PromptSet
    from plugins.t2i_metrics import TextImageEvaluator
    from registry.registry import build
    metas = [row("a photo of a bench"), row("a photo of two backpacks"),
             row("a photo of a bird below a skateboard")]
    prompts = PromptSet([m["prompt"] for m in metas], metadata=metas)
    scripted.script = {0.0: [det("bench")],
                       0.2: [det("backpack", 0.95), det("backpack", 0.93)],
                       0.4: [det("backpack", 0.95)],
                       0.6: [det("skateboard", 0.9, (0, 0, 10, 10)), det("bird", 0.9, (0, 40, 10, 50))],
                       0.8: [det("skateboard", 0.9, (0, 40, 10, 50)), det("bird", 0.9, (0, 0, 10, 10))]}
    grey = torch.tensor([0.0, 0.0, 0.2, 0.4, 0.6, 0.8])   # bench: 2/2; backpacks: 1/2; bird below: 1/2
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    evaluator = TextImageEvaluator(prompts, ("geneval",), geneval=GenEvalConfig(detector="scripted"))
    data = EvalData(None, None, samples=Samples(grey.view(-1, 1, 1, 1).expand(-1, 3, 4, 4), labels),
                    evaluator=evaluator)
    out = build("metric", "geneval", {"batch_size": 4}).compute(data)
    assert out == pytest.approx({"geneval_single_object": 1.0, "geneval_counting": 0.5, "geneval_position": 0.5,
                                 "geneval": 2 / 3})
    plain = EvalData(None, None, samples=data.samples, evaluator=TextImageEvaluator(PromptSet(["x", "y", "z"]),
                                                                                      ("geneval",)))
    with pytest.raises(UserError, match="prompts.source=geneval"):
        build("metric", "geneval").compute(plain)


def test_geneval_on_a_tiny_teacher_end_to_end(scripted, clip_folder, tmp_path):
    """teacher.prompts.source=geneval:colors, eval_metrics [geneval]: the teacher's samples are decoded and judged
    through core.evaluate, with the test detector (every image holds one object of the first prompt's class) and
    the CLIP colour classifier (tiny random CLIP)."""
    pytest.importorskip("diffusers")
    from test_amused import CODES, SIDE, write_tiny_amused

    from core.evaluate import evaluate_models
    from plugins.teachers.amused import AmusedTeacher
    folder = write_tiny_amused(tmp_path / "amused")
    with pytest.raises(ValueError, match="geneval needs the GenEval prompts"):
        AmusedTeacher.Config(checkpoint=str(folder), eval_metrics=["geneval"])
    teacher = AmusedTeacher(AmusedTeacher.Config(
        checkpoint=str(folder), prompts={"source": "geneval:colors", "limit": 3}, eval_metrics=["geneval"],
        eval_geneval={"detector": "scripted", "clip": str(clip_folder)}))
    metas = teacher.prompt_set.metadata
    assert [m["tag"] for m in metas] == ["colors"] * 3 and teacher.num_classes == 3
    first = metas[0]["include"][0]["class"]

    class Everywhere(dict):   # whatever the image: one object of the first prompt's class
        def get(self, key, default=None):
            return [det(first, 0.9, (0, 0, 3, 3))]
    scripted.script = Everywhere()
    generate = lambda cond, g: torch.randint(0, CODES, (len(cond), SIDE * SIDE), generator=g)
    rows, samples = evaluate_models([("teacher", 1, generate)], teacher,
                                    {"metrics": ["geneval"], "samples_per_class": 2, "batch_size": 4, "seed": 0})
    (r,) = rows
    others = sum(m["include"][0]["class"] == first for m in metas[1:])
    assert set(r) >= {"geneval", "geneval_colors"} and r["geneval"] == r["geneval_colors"]
    # only prompts of the first class can be right; among those the tiny CLIP decides the colour
    assert 0 <= r["geneval"] <= 2 * (1 + others) / 6
    colors = teacher.evaluator()
    assert colors.geneval.clip == str(clip_folder)


# ---------------------------------------------------------------------------------------------------
# the command line: a student sampled on the GenEval prompts, and the official folder layout
# ---------------------------------------------------------------------------------------------------

@pytest.fixture
def tiny_student(tmp_path):
    """A tiny aMUSEd teacher and a Di[M]O student checkpoint of it (the teacher's weights, not trained), distilled
    on the built-in prompts: evaluation swaps in the GenEval prompts."""
    pytest.importorskip("diffusers")
    from test_amused import write_tiny_amused

    from core.config import resolve
    from core.export import save_student
    from core.factory import build_method
    folder = write_tiny_amused(tmp_path / "amused")
    run = resolve(["method=dimo", "teacher=amused", f"teacher.checkpoint={folder}"])
    method, _ = build_method(run)
    (tmp_path / "run").mkdir()
    save_student(method.student_network(), run, tmp_path / "run", False)
    return folder, tmp_path / "run"


def test_cli_evaluates_a_student_on_the_geneval_prompts_and_writes_the_official_layout(scripted, tiny_student,
                                                                                        tmp_path):
    import json

    from plugins.geneval.run import evaluate_command, main, score_command
    folder, run = tiny_student
    first = geneval_metadata("single_object")[0]["include"][0]["class"]

    class Everywhere(dict):   # whatever the image: one object of the first prompt's class
        def get(self, key, default=None):
            return [det(first, 0.9, (0, 0, 3, 3))]
    scripted.script = Everywhere()
    out = evaluate_command([f"checkpoint={run}", "tag=single_object", "limit=3", "samples_per_prompt=2",
                            "batch_size=4", f"images={tmp_path / 'images'}", f"out={tmp_path / 'geneval.json'}",
                            "teacher.eval_geneval.detector=scripted", "device=cpu"])
    assert out["model"] == "student@1" and out["prompts"] == 3 and len(out["images"]) == 6
    assert out["geneval"] == out["geneval_single_object"] == pytest.approx(2 / 6)   # the first prompt's 2 images
    assert out["config"]["teacher"]["prompts"]["source"] == "geneval:single_object"
    assert [r["correct"] for r in out["images"]] == [True, True, False, False, False, False]
    assert out["images"][2]["reason"].startswith("expected ")
    written = json.loads((tmp_path / "geneval.json").read_text())
    assert written["geneval"] == out["geneval"] and len(written["images"]) == 6
    # the official layout: <prompt>/metadata.jsonl and samples/<k>.png, which `score` (and GenEval's script) reads
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["00000", "00001", "00002"]
    assert json.loads((tmp_path / "images" / "00001" / "metadata.jsonl").read_text()) == \
        geneval_metadata("single_object")[1]
    assert sorted(p.name for p in (tmp_path / "images" / "00000" / "samples").iterdir()) == ["0000.png", "0001.png"]
    again = score_command([f"images={tmp_path / 'images'}", "geneval.detector=scripted", "device=cpu"])
    assert again["geneval"] == out["geneval"] and again["images_scored"] == 6
    assert [r["correct"] for r in again["images"]] == [r["correct"] for r in out["images"]]
    # errors: a clear message and exit code 2
    assert main(["evaluate", "tag=single_object"]) == 2                      # model=student needs checkpoint=
    assert main(["evaluate", f"checkpoint={run}", "teacher=maskgen"]) == 2   # the run's teacher is fixed
    assert main(["evaluate", f"checkpoint={run}", "colour=red"]) == 2
    assert main(["score", f"images={tmp_path}"]) == 2                          # no official layout there
    with pytest.raises(UserError, match="unknown GenEval tag|shapes"):
        evaluate_command([f"checkpoint={run}", "tag=shapes"])


def test_cli_teacher_rows_and_class_conditional_teachers(scripted, tiny_student):
    from plugins.geneval.run import evaluate_command
    folder, _ = tiny_student
    scripted.script = {}
    out = evaluate_command(["model=teacher", "teacher=amused", f"teacher.checkpoint={folder}", "steps=2",
                            "tag=counting", "limit=1", "samples_per_prompt=1", "teacher.eval_geneval.detector=scripted",
                            "device=cpu"])
    assert out["model"] == "teacher@2" and out == {**out, "geneval": 0.0, "geneval_counting": 0.0}
    with pytest.raises(UserError, match="not a text-to-image teacher"):
        evaluate_command(["model=teacher", "teacher=digits", "limit=1"])
