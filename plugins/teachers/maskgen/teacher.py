"""The ``maskgen`` teacher: MaskGen-VQ L/XL (Kim et al. 2025) over the TA-TiTok bl128 VQ tokenizer, the
text-to-image teacher of the paper's Table 3.

Files (huggingface_hub ``PyTorchModelHubMixin`` layout: ``config.json`` = the OmegaConf dict, ``model.safetensors``):
  * generator ``turkeyju/generator_maskgen_vq_l`` (or ``_xl``), or a local folder / file;
  * tokenizer ``turkeyju/tokenizer_tatitok_bl128_vq``: encoder (real tokens for the GAN head), codebook and
    decoder, loaded strictly;
  * text tower: open_clip ``ViT-L-14-336`` with the ``openai`` weights (MaskGen reads the penultimate token
    states and the pooled projection; the TA-TiTok decoder reads the final ``ln_final`` token states).

Grid: 128 1-D tokens, V = 8192, [M] = 8192. Conditions are prompt indices (plugins/prompts.py); the null prompt is
``""`` encoded by CLIP (not zeros), as ``MaskGen_VQ.generate``. The aesthetic micro-condition is the config's
``sample_aesthetic_score`` (6.5), which the official generate uses whatever value is passed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from pydantic import Field
from safetensors.torch import save_file
from torch import Tensor, nn

from core.checkpoint import load_state_checked
from core.errors import UserError
from core.interfaces import Teacher
from plugins.prompts import PromptConditioned, TextConditioner, TextToImageConfig, load_prompts
from plugins.teachers.amused.loading import read_json
from plugins.teachers.maskgen.network import MaskGenArch, MaskGenNetwork, TATiTokArch, TATiTokVQ, fold_tied_head
from plugins.teachers.maskgit.loading import locate, read_weights_file

GENERATOR_HUB_ID = "turkeyju/generator_maskgen_vq_l"
TOKENIZER_HUB_ID = "turkeyju/tokenizer_tatitok_bl128_vq"


def read_weights(path: Path, field: str) -> dict:
    """model.safetensors, or the ``fun-research/TA-TiTok`` ``.bin`` state dicts (read without unpickling code)."""
    blob = read_weights_file(path, field)
    if not (isinstance(blob, dict) and all(torch.is_tensor(v) for v in blob.values())):
        raise UserError(f"{field}: '{path}' is not a state dict of tensors")
    return blob


def weights_path(spec: str, field: str) -> Path:
    path = Path(spec).expanduser()
    return path if path.is_file() else locate(spec, "model.safetensors", field)


def config_of(spec: str, field: str, sibling_name: str) -> dict:
    """config.json of a folder/hub id, or beside a weights file (``<file>.json`` or ``config.json``)."""
    path = Path(spec).expanduser()
    if path.is_file():
        for cand in (path.with_suffix(".json"), path.parent / "config.json"):
            if cand.is_file():
                return json.loads(cand.read_text())
        raise UserError(f"{field}='{spec}' is a weights file without a config beside it ({path.with_suffix('.json').name} "
                        f"or config.json); the {sibling_name} shape comes from the official config")
    return read_json(spec, "config.json", field)


class MaskGenConfig(TextToImageConfig):
    checkpoint: str = Field(GENERATOR_HUB_ID, description="MaskGen-VQ generator: folder or hub id with config.json + "
                                                          "model.safetensors (turkeyju/generator_maskgen_vq_{l,xl}), "
                                                          "or a weights file with its config beside it")
    tokenizer: str = Field(TOKENIZER_HUB_ID, description="TA-TiTok VQ tokenizer: folder, hub id or weights file")
    clip_arch: str = Field("ViT-L-14-336", description="open_clip text tower, or a .json open_clip model config")
    clip_pretrained: Optional[str] = Field("openai", description="open_clip pretrained tag or a local weights file")
    aesthetic_score: float = Field(6.5, description="aesthetic micro-condition (official sample_aesthetic_score 6.5)")
    tokenizer_arch: Optional[TATiTokArch] = Field(None, description="explicit TA-TiTok decoder shape; overrides the "
                                                                    "size table of the tokenizer's config (tiny tests)")


class MaskGenTeacher(PromptConditioned, Teacher):
    Config = MaskGenConfig
    recipe = "maskgen"   # plugins/recipes/maskgen/*.yaml (subclasses inherit them)

    def __init__(self, config):
        super().__init__(config)
        self.arch = MaskGenArch.from_official(config_of(config.checkpoint, "teacher.checkpoint", "generator"))
        self.seq_len, self.vocab_size = self.arch.seq_len, self.arch.codebook_size
        self.mask_id = self.arch.codebook_size
        self.prompt_set = load_prompts(config.prompts, default_negative="")
        self.num_classes = len(self.prompt_set.prompts)
        self._text: Optional[TextConditioner] = None
        self._vq: Optional[TATiTokVQ] = None
        self._image_size: Optional[int] = None

    @property
    def image_shape(self):
        if self._image_size is None:
            self._image_size = self.tokenizer_arch().image_size
        return (3, self._image_size, self._image_size)

    # -- conditions: prompts (PromptConditioned), image-caption data encoded by TA-TiTok -------------
    def encode(self, images: Tensor) -> Tensor:
        """Images in [0, 1] (the TA-TiTok README's input) -> tokens ``[B, 128]``."""
        with torch.no_grad():
            return self.tatitok(images.device).encode(images)

    def evaluator(self):
        """Per-prompt samples scored against their prompts (plugins/t2i_metrics.py)."""
        from plugins.t2i_metrics import TextImageEvaluator
        c = self.config
        return TextImageEvaluator.of(self.prompt_set, c)

    def clip(self):
        import open_clip
        arch = self.config.clip_arch
        if arch.endswith(".json"):
            path = Path(arch).expanduser()
            if not path.is_file():
                raise UserError(f"teacher.clip_arch='{arch}' is not an open_clip model config file")
            open_clip.add_model_config(path)
            arch = path.stem
        try:
            model = open_clip.create_model(arch, pretrained=self.config.clip_pretrained)
        except RuntimeError as exc:
            raise UserError(f"teacher.clip_arch='{arch}' / clip_pretrained='{self.config.clip_pretrained}': "
                            f"open_clip could not build or load it ({str(exc).splitlines()[0]})") from None
        model.visual = None   # only the text tower is used
        return model.eval().requires_grad_(False), open_clip.get_tokenizer(arch)

    def text_conditioner(self) -> TextConditioner:
        if self._text is None:
            model, tokenizer = self.clip()
            self._text = TextConditioner(self.prompt_set, lambda texts, device: clip_text_states(
                model.to(device), tokenizer(texts).to(device)))
        return self._text

    # -- the network -------------------------------------------------------------------------------
    def build_network(self, load_weights: bool = True) -> MaskGenNetwork:
        net = MaskGenNetwork(self.arch, self.config.aesthetic_score)
        if load_weights:
            path = weights_path(self.config.checkpoint, "teacher.checkpoint")
            try:
                state = fold_tied_head(read_weights(path, "teacher.checkpoint"))
            except ValueError as exc:
                raise UserError(f"teacher.checkpoint: '{path}': {exc}") from None
            load_state_checked(net, state, path, "teacher.checkpoint", f"MaskGen-VQ {self.arch.model_dump()}")
        net.text = self.text_conditioner()
        return net.eval()

    def save_pretrained(self, network, path) -> Path:
        """config.json (the official OmegaConf dict, copied) + model.safetensors, as PyTorchModelHubMixin."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = config_of(self.config.checkpoint, "teacher.checkpoint", "generator")
        (path / "config.json").write_text(json.dumps(config, indent=1))
        state = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
        state["lm_head.weight"] = state["embeddings.weight"].clone()   # the official WeightTiedLMHead key
        save_file(state, str(path / "model.safetensors"))
        return path

    # -- the codec ---------------------------------------------------------------------------------
    def tatitok(self, device=None) -> TATiTokVQ:
        if self._vq is None:
            field = "teacher.tokenizer"
            arch = self.tokenizer_arch()
            if arch.codebook_size != self.vocab_size or arch.latent_tokens != self.seq_len:
                raise UserError(f"{field}: the tokenizer has {arch.codebook_size} codes x {arch.latent_tokens} tokens, "
                                f"the generator {self.vocab_size} x {self.seq_len}")
            path = weights_path(self.config.tokenizer, field)
            model = TATiTokVQ(arch)
            load_state_checked(model, read_weights(path, field), path, field, f"TA-TiTok VQ {arch.model_dump()}")
            self._vq = model.eval().requires_grad_(False)
        return self._vq.to(device) if device is not None else self._vq

    def tokenizer_arch(self) -> TATiTokArch:
        if self.config.tokenizer_arch is not None:
            return self.config.tokenizer_arch
        try:
            return TATiTokArch.from_official(config_of(self.config.tokenizer, "teacher.tokenizer", "tokenizer"))
        except (KeyError, ValueError) as exc:
            raise UserError(f"teacher.tokenizer: its config.json is not a TA-TiTok VQ config ({exc})") from None

    def text_guidance(self, cond: Optional[Tensor], batch: int, device) -> Tensor:
        """The decoder's text: CLIP ``ln_final`` states of each prompt (the null prompt without ``cond``)."""
        if cond is None:
            cond = torch.full((batch,), self.prompt_set.null_index, dtype=torch.long)
        return self.text_conditioner()(cond.to(device))["final"]

    def decode(self, tokens: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        guide = self.text_guidance(cond, tokens.shape[0], tokens.device)
        return self.tatitok(tokens.device).decode_tokens(tokens, guide).clamp(0, 1)

    def decode_soft(self, probs: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        guide = self.text_guidance(cond, probs.shape[0], probs.device)
        return self.tatitok(probs.device).decode_soft(probs, guide).clamp(0, 1)

    def decode_with(self, tokens: Tensor, cond: Tensor) -> Tensor:
        """The TA-TiTok decoder reads the prompt's text: samples, grids and rewards decode with their prompts."""
        return self.decode(tokens, cond)

    def decode_soft_with(self, probs: Tensor, cond: Tensor) -> Tensor:
        return self.decode_soft(probs, cond)


def clip_text_states(model: nn.Module, ids: Tensor) -> dict[str, Tensor]:
    """open_clip text tower, as MaskGen's ``open_clip_text_encoding`` and the TA-TiTok README: penultimate block
    states (``hidden``), ``ln_final`` states (``final``) and the projected EOT (argmax-id) state (``pooled``)."""
    x = model.token_embedding(ids) + model.positional_embedding
    blocks = model.transformer.resblocks
    first = not getattr(model.transformer, "batch_first", True)
    x = x.transpose(0, 1) if first else x
    for block in blocks[:-1]:
        x = block(x, attn_mask=model.attn_mask)
    penultimate = x
    x = blocks[-1](x, attn_mask=model.attn_mask)
    if first:
        x, penultimate = x.transpose(0, 1), penultimate.transpose(0, 1)
    final = model.ln_final(x)
    eot = final[torch.arange(ids.shape[0], device=ids.device), ids.argmax(-1)]
    proj = model.text_projection
    pooled = proj(eot) if isinstance(proj, nn.Module) else eot @ proj
    return {"hidden": penultimate.float(), "final": final.float(), "pooled": pooled.float()}
