#!/usr/bin/env python3
"""Build Hugging Face ``CLIPTokenizer`` folders from the original CLIP BPE file.

OpenAI's CLIP (and OpenCLIP, which reuses it unchanged) ships its byte-level BPE
model as a single gzip-compressed text file, ``bpe_simple_vocab_16e6.txt.gz``.
The file holds a header line followed by 262,144 merge rules; CLIP only uses the
first 48,894 of them.  Hugging Face ``transformers`` instead expects a
``vocab.json`` (token -> id) plus a ``merges.txt``.  This script performs that
conversion offline, so that clp2p never needs to download a tokenizer.

The id layout reproduces the one the CLIP reference implementation builds in
memory (and that every Stable Diffusion text encoder was trained with):

====================  ===========  ==========================================
ids                   count        tokens
====================  ===========  ==========================================
0 .. 255              256          the byte-to-unicode alphabet
256 .. 511            256          the same characters followed by ``</w>``
512 .. 49405          48,894       each merge rule, its two halves joined
49406                 1            ``<|startoftext|>``
49407                 1            ``<|endoftext|>``
====================  ===========  ==========================================

Two folders are written next to each other (by default beside this script):

``clip/``
    Stable Diffusion 1.x flavour: padding uses ``<|endoftext|>`` (id 49407).
``clip-sd2/``
    Stable Diffusion 2.x / OpenCLIP flavour: padding uses ``!`` (id 0).

Both have ``model_max_length`` 77.  The source may be given either as the
``.txt.gz`` file itself or as a wheel / zip archive that contains it (for
example ``open_clip_torch-*.whl`` from PyPI)::

    python resources/tokenizers/convert_clip_bpe.py \\
        /path/to/open_clip_torch-3.3.0-py3-none-any.whl

Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import zipfile
from pathlib import Path

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"

# CLIP keeps the first 49152 - 256 - 2 = 48894 merges (a 49152-token budget
# minus the 256 byte tokens and the 2 special tokens).  Together with the 256
# end-of-word byte tokens this gives the 49408-entry vocabulary of every
# Stable Diffusion text encoder.
NUM_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 2 * 256 + NUM_MERGES + 2  # 49408

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"
MAX_LENGTH = 77

# name of the output folder -> padding token
VARIANTS = {
    "clip": EOS,  # Stable Diffusion 1.x (openai/clip-vit-large-patch14 layout)
    "clip-sd2": "!",  # Stable Diffusion 2.x (OpenCLIP ViT-H/14 layout)
}


def byte_alphabet() -> list[str]:
    """Return the 256 printable stand-ins for the bytes 0..255, in vocab order.

    Byte-level BPE must not operate on raw control or whitespace characters, so
    every byte is represented by a visible unicode character.  Bytes that are
    already printable Latin-1 characters ("!".."~", "¡".."¬", "®".."ÿ") stand for
    themselves and come first, in byte order; each of the remaining 68 bytes is
    assigned, in byte order, the next code point from U+0100 upwards.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    kept = set(printable)
    extra = [b for b in range(256) if b not in kept]
    chars = [chr(b) for b in printable]
    chars += [chr(256 + i) for i in range(len(extra))]
    return chars


def read_bpe_lines(source: Path) -> list[str]:
    """Read the decompressed lines of the BPE file from a .gz or a wheel/zip."""
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            members = [n for n in archive.namelist() if n.endswith("/" + BPE_FILE_NAME)]
            if not members and BPE_FILE_NAME in archive.namelist():
                members = [BPE_FILE_NAME]
            if len(members) != 1:
                raise SystemExit(f"expected exactly one {BPE_FILE_NAME} in {source}, got {members}")
            compressed = archive.read(members[0])
    else:
        compressed = source.read_bytes()
    print(f"{BPE_FILE_NAME} sha256: {hashlib.sha256(compressed).hexdigest()}", file=sys.stderr)
    return gzip.decompress(compressed).decode("utf-8").split("\n")


def build_vocab(lines: list[str]) -> tuple[dict[str, int], list[str]]:
    """Return (token -> id, merge lines) following CLIP's construction."""
    # The first line is a version header; the merges follow, one "a b" per line.
    merges = lines[1 : 1 + NUM_MERGES]
    if len(merges) != NUM_MERGES:
        raise SystemExit(f"BPE file too short: {len(merges)} merges, need {NUM_MERGES}")
    for line in merges:
        if len(line.split()) != 2:
            raise SystemExit(f"malformed merge rule: {line!r}")

    alphabet = byte_alphabet()
    tokens = alphabet + [c + END_OF_WORD for c in alphabet]
    tokens += ["".join(line.split()) for line in merges]
    tokens += [BOS, EOS]

    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise SystemExit(f"vocabulary has {len(vocab)} unique entries, expected {VOCAB_SIZE}")
    return vocab, merges


def tokenizer_config(pad_token: str) -> dict:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": pad_token,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
    }


def special_tokens_map(pad_token: str) -> dict:
    return {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}


def write_json(path: Path, data: dict, *, compact: bool = False) -> None:
    if compact:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(data, ensure_ascii=False, indent=2)
    path.write_text(text + "\n", encoding="utf-8")


def write_folder(folder: Path, vocab: dict[str, int], merges: list[str], pad_token: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # vocab.json is large; keep it on one line like the published CLIP files.
    write_json(folder / "vocab.json", vocab, compact=True)
    with open(folder / "merges.txt", "w", encoding="utf-8", newline="\n") as handle:
        handle.write("#version: 0.2\n")
        handle.write("\n".join(merges))
        handle.write("\n")
    write_json(folder / "tokenizer_config.json", tokenizer_config(pad_token))
    write_json(folder / "special_tokens_map.json", special_tokens_map(pad_token))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "source", type=Path, help=f"{BPE_FILE_NAME}, or a wheel/zip that contains it"
    )
    parser.add_argument(
        "--output-root",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="directory receiving the clip/ and clip-sd2/ folders (default: next to this script)",
    )
    args = parser.parse_args(argv)

    vocab, merges = build_vocab(read_bpe_lines(args.source))
    for name, pad_token in VARIANTS.items():
        folder = args.output_root / name
        write_folder(folder, vocab, merges, pad_token)
        print(f"wrote {folder} (pad token {pad_token!r}, {len(vocab)} tokens)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
