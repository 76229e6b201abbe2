"""Metric logging on rank 0: a JSONL file in the run folder, wandb (offline unless asked), the console."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

from core import distributed as dist
from core.health import finite_json


class MetricLogger:
    def __init__(self, run_dir: Path, config: dict, mode: str = "offline", project: str = "dimo",
                 name: Optional[str] = None):
        self.enabled = dist.is_main()
        self.file = None
        self.wandb = None
        if not self.enabled:
            return
        self.file = open(run_dir / "metrics.jsonl", "a")
        if mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            try:
                import wandb
                self.wandb = wandb.init(project=project, name=name, dir=str(run_dir), config=config, mode=mode,
                                        reinit="finish_previous")
            except Exception as exc:  # logging must never kill a training run
                print(f"dimo: wandb disabled ({exc})", file=sys.stderr)

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        # Strict JSON: a nan/inf value (trainer.on_nonfinite=warn or skip) is written as null.
        self.file.write(json.dumps(finite_json({"step": step, **values}), allow_nan=False) + "\n")
        self.file.flush()
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def console(self, text: str) -> None:
        if self.enabled:
            from tqdm import tqdm
            tqdm.write(text)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.wandb is not None:
            self.wandb.finish()
