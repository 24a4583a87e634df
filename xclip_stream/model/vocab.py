"""The CLIP vocabulary files: OpenAI's merges -> vocab.json + merges.txt, in CLIP's id layout.

X-CLIP checkpoints ship OpenAI's CLIP vocabulary (49,408 tokens: 256 byte symbols, the same with
the end-of-word marker ``</w>``, 48,894 merges, ``<|startoftext|>`` and ``<|endoftext|>``).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

from .files import read_json_object

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
DEFAULT_MAX_LENGTH = 77  # CLIP text position embeddings
CLIP_VOCAB_SIZE = 49408
NUM_CLIP_MERGES = CLIP_VOCAB_SIZE - 2 * 256 - 2  # 48,894

def bytes_to_unicode() -> dict[int, str]:
    """Map each byte 0..255 to a printable unicode character (the GPT-2/CLIP byte alphabet).

    Printable latin-1 bytes map to themselves; the other 68 bytes (controls, space, soft hyphen,
    ...) map to code points 256, 257, ... in byte order, so every BPE symbol is a visible,
    whitespace-free string. The dict's insertion order (printable bytes first) is the order of
    the first 256 CLIP vocabulary ids.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\N{INVERTED EXCLAMATION MARK}"), ord("\N{NOT SIGN}") + 1),
        *range(ord("\N{REGISTERED SIGN}"), ord("\N{LATIN SMALL LETTER Y WITH DIAERESIS}") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    next_code = 256
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(next_code)
            next_code += 1
    return mapping


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file name says
        data = gzip.decompress(data)
    return data.decode("utf-8")


def clip_vocab_from_bpe(bpe_path: str | Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Build the CLIP vocabulary the way OpenAI's ``SimpleTokenizer`` does.

    ``bpe_path`` is ``bpe_simple_vocab_16e6.txt.gz`` (or its decompressed ``.txt``): a header line,
    then one merge ``"a b"`` per line. CLIP uses only the first 48,894 merges. Ids: the 256 byte
    symbols, the same with ``</w>``, one token per merge (the merged pair), then the two specials.
    Returns ``(vocab, merges)`` with 49,408 vocabulary entries.
    """
    path = Path(bpe_path)
    if not path.is_file():
        raise FileNotFoundError(f"BPE merges file not found: {path}")
    lines = _read_text(path).split("\n")
    merge_lines = lines[1 : 1 + NUM_CLIP_MERGES]  # line 0 is a version header
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(merge_lines, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected a merge 'a b', got {line!r}")
        merges.append((parts[0], parts[1]))
    if len(merges) != NUM_CLIP_MERGES:
        raise ValueError(f"{path}: expected at least {NUM_CLIP_MERGES} merges, found {len(merges)}")

    vocab = clip_vocab_from_merges(merges)
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise ValueError(f"{path}: built {len(vocab)} distinct tokens, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges


def clip_vocab_from_merges(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """CLIP's id layout for a list of merges: byte symbols, the same with ``</w>``, one token per
    merge, then ``<|startoftext|>`` and ``<|endoftext|>``, so end-of-text is the largest id (the
    text tower pools at ``input_ids.argmax``)."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + END_OF_WORD for s in symbols]
    tokens += [a + b for a, b in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {tok: i for i, tok in enumerate(tokens)}


def write_vocab_files(
    vocab: dict[str, int], merges: Sequence[tuple[str, str]], folder: str | Path
) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` (with a ``#version: 0.2`` header) into ``folder``.

    These are the files Hugging Face CLIP/X-CLIP checkpoints ship and ``CLIPTokenizer`` reads.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path = folder / "vocab.json"
    merges_path = folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    merges_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def read_vocab_files(folder: str | Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read ``vocab.json`` + ``merges.txt`` from ``folder`` (the inverse of :func:`write_vocab_files`)."""
    folder = Path(folder)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab = read_json_object(vocab_path)
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(merges_path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip() or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{merges_path}:{lineno}: expected a merge 'a b', got {line!r}")
        merges.append((parts[0], parts[1]))
    return vocab, merges
