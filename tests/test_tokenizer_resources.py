"""Checks of the bundled CLIP tokenizer folders (CPU only, no network)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = ROOT / "resources" / "tokenizers"
FOLDERS = {"clip": ("<|endoftext|>", 49407), "clip-sd2": ("!", 0)}

BOS, EOS = 49406, 49407

# Reference ids: identical to those of the Stable Diffusion tokenizers on the
# Hugging Face hub and to OpenAI/OpenCLIP's reference tokenizer.
EXPECTED_IDS = {
    "a photo of a cat on a mat": [BOS, 320, 1125, 539, 320, 2368, 525, 320, 9063, EOS],
    "a photo of a dog": [BOS, 320, 1125, 539, 320, 1929, EOS],
    "a photo of an astronaut riding a horse on mars": [
        BOS,
        320,
        1125,
        539,
        550,
        18376,
        6765,
        320,
        4558,
        525,
        7496,
        EOS,
    ],
    "Apple CoreML developer tools on a Macbook Air are fast": [
        BOS,
        3055,
        19622,
        5780,
        10929,
        5771,
        525,
        320,
        20617,
        1922,
        631,
        1953,
        EOS,
    ],
    "the black dog": [BOS, 518, 1449, 1929, EOS],
    "cats dogs kitty kitties feline": [BOS, 3989, 3255, 8417, 36013, 29471, EOS],
}

# Words that CLIP splits into several BPE pieces.
EXPECTED_PIECES = {
    "photorealistic": ["photo", "realistic</w>"],
    "hyperrealistic": ["hyper", "realistic</w>"],
    "ArtStation": ["art", "station</w>"],
    "CoreML": ["core", "ml</w>"],
}


def _load_script():
    path = TOKENIZERS / "convert_clip_bpe.py"
    spec = importlib.util.spec_from_file_location("convert_clip_bpe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=sorted(FOLDERS))
def tokenizer(request):
    tok = transformers.CLIPTokenizer.from_pretrained(str(TOKENIZERS / request.param))
    tok.folder_name = request.param
    return tok


@pytest.fixture(scope="module")
def sd1_tokenizer():
    return transformers.CLIPTokenizer.from_pretrained(str(TOKENIZERS / "clip"))


def test_folders_contain_expected_files():
    for name in FOLDERS:
        folder = TOKENIZERS / name
        for file in (
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ):
            assert (folder / file).is_file(), f"{name}/{file} missing"
    assert (TOKENIZERS / "LICENSE-CLIP.txt").is_file()
    assert "Copyright (c) 2021 OpenAI" in (TOKENIZERS / "LICENSE-CLIP.txt").read_text()


def test_vocab_and_merges_layout():
    script = _load_script()
    vocab = json.loads((TOKENIZERS / "clip" / "vocab.json").read_text(encoding="utf-8"))
    lines = (TOKENIZERS / "clip" / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#version: 0.2"
    merges = lines[1:]
    assert len(merges) == 48894
    assert len(vocab) == 49408
    assert sorted(vocab.values()) == list(range(49408))

    by_id = {index: token for token, index in vocab.items()}
    alphabet = script.byte_alphabet()
    assert len(set(alphabet)) == 256
    assert [by_id[i] for i in range(256)] == alphabet
    assert [by_id[256 + i] for i in range(256)] == [c + "</w>" for c in alphabet]
    assert all(by_id[512 + i] == "".join(m.split()) for i, m in enumerate(merges))
    assert by_id[BOS] == "<|startoftext|>"
    assert by_id[EOS] == "<|endoftext|>"

    # Both flavours share the vocabulary; only the special-token files differ.
    for file in ("vocab.json", "merges.txt"):
        assert (TOKENIZERS / "clip" / file).read_bytes() == (
            TOKENIZERS / "clip-sd2" / file
        ).read_bytes()


def test_special_tokens_and_lengths(tokenizer):
    pad_token, pad_id = FOLDERS[tokenizer.folder_name]
    assert tokenizer.model_max_length == 77
    assert len(tokenizer) == 49408
    assert tokenizer.bos_token_id == BOS
    assert tokenizer.eos_token_id == EOS
    assert tokenizer.pad_token == pad_token
    assert tokenizer.pad_token_id == pad_id

    padded = tokenizer(
        "a photo of a cat",
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
    ).input_ids
    assert len(padded) == 77
    assert padded[:7] == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert padded[7:] == [pad_id] * 70

    long_ids = tokenizer(
        "cat " * 200, truncation=True, max_length=tokenizer.model_max_length
    ).input_ids
    assert len(long_ids) == 77
    assert long_ids[0] == BOS and long_ids[-1] == EOS


@pytest.mark.parametrize("text", sorted(EXPECTED_IDS))
def test_reference_ids(tokenizer, text):
    assert tokenizer(text).input_ids == EXPECTED_IDS[text]


@pytest.mark.parametrize("word", sorted(EXPECTED_PIECES))
def test_multi_token_words(sd1_tokenizer, word):
    ids = sd1_tokenizer(word, add_special_tokens=False).input_ids
    assert sd1_tokenizer.convert_ids_to_tokens(ids) == EXPECTED_PIECES[word]


def test_normalisation(sd1_tokenizer):
    # CLIP lower-cases and collapses whitespace before applying the BPE.
    messy = sd1_tokenizer("  A   PHOTO of\ta\nCat ").input_ids
    assert messy == sd1_tokenizer("a photo of a cat").input_ids
    ids = sd1_tokenizer("a photo of a cat on a mat").input_ids
    assert sd1_tokenizer.decode(ids, skip_special_tokens=True) == "a photo of a cat on a mat"


def test_regeneration_matches(tmp_path):
    """Re-run the converter when the source is available (set CLP2P_CLIP_BPE_SOURCE)."""
    source = os.environ.get("CLP2P_CLIP_BPE_SOURCE")
    if not source or not Path(source).is_file():
        pytest.skip("CLP2P_CLIP_BPE_SOURCE not set to the open_clip wheel or the .txt.gz")
    script = _load_script()
    assert script.main([source, "--output-root", str(tmp_path)]) == 0
    for name in FOLDERS:
        for file in sorted((TOKENIZERS / name).iterdir()):
            regenerated = (tmp_path / name / file.name).read_bytes()
            assert regenerated == file.read_bytes(), f"{name}/{file.name}"
