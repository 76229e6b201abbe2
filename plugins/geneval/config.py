"""The options of the ``geneval`` metric (``teacher.eval_geneval.*`` of text-to-image teachers)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from core.interfaces import PluginConfig

MASK2FORMER = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco"
CHECKPOINT_URL = ("https://download.openmmlab.com/mmdetection/v2.0/mask2former/" + MASK2FORMER + "/" + MASK2FORMER
                  + "_20220504_001756-743b7d99.pth")


class GenEvalConfig(PluginConfig):
    detector: str = Field("mask2former", description="object detector: mask2former (mmdet, the official GenEval "
                                                     "detector), a name given to plugins.geneval.register_detector, "
                                                     "or 'package.module:Class' (a plugins.geneval.Detector)")
    checkpoint: Optional[str] = Field(None, description=f"local detector weights: for mask2former the file "
                                                        f"{MASK2FORMER}.pth ({CHECKPOINT_URL})")
    mmdet_config: Optional[str] = Field(None, description=f"mmdet config file of the detector (default: "
                                                          f"configs/mask2former/{MASK2FORMER}.py of the "
                                                          f"installed mmdet)")
    clip: Optional[str] = Field(None, description="CLIPModel folder or hub id of the colour classifier (default: "
                                                  "teacher.eval_clip; the official one is CLIP ViT-L/14 openai, "
                                                  "openai/clip-vit-large-patch14)")
    threshold: float = Field(0.3, ge=0, le=1, description="detections kept above this confidence")
    counting_threshold: float = Field(0.9, ge=0, le=1, description="the confidence threshold of counting prompts")
    max_objects: int = Field(16, gt=0, description="most detections kept per class")
    max_overlap: float = Field(1.0, gt=0, le=1, description="IoU above which a less confident box of the same "
                                                            "class is dropped (1: none dropped, the official "
                                                            "default)")
    position_threshold: float = Field(0.1, ge=0, description="relative margin of position relations (times the "
                                                             "summed box sizes)")
    background: str = Field("#999", description="fill outside an object's mask in the crops the colour classifier "
                                                "sees (PIL colour), or 'original' to keep the image")
