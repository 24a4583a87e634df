"""CLIP byte-level BPE tokenizer (the X-CLIP text side), built on the `tokenizers` library.

The vocabulary files live in :mod:`.vocab`. This module can

* build the fast tokenizer pipeline that Hugging Face's ``CLIPTokenizer`` builds
  (:func:`build_clip_tokenizer`), so ids match it token for token;
* learn a small vocabulary in CLIP's layout for models the project trains (:func:`train_clip_vocab`);
* wrap it in a small :class:`CLIPTokenizer` with the familiar ``from_pretrained`` / ``__call__`` /
  ``decode`` / ``save_pretrained`` surface.

Padding and truncation are done here in Python, not by mutating the ``tokenizers.Tokenizer``
(its ``enable_padding``/``enable_truncation`` are stateful), so one tokenizer can serve calls with
different settings from several threads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from tokenizers.models import BPE

from .files import read_json_object
from .vocab import (  # noqa: F401  (re-exported: the tokenizer's public surface)
    BOS_TOKEN,
    CLIP_VOCAB_SIZE,
    DEFAULT_MAX_LENGTH,
    END_OF_WORD,
    EOS_TOKEN,
    bytes_to_unicode,
    clip_vocab_from_bpe,
    clip_vocab_from_merges,
    read_vocab_files,
    write_vocab_files,
)

# OpenAI's CLIP pre-tokenisation pattern: the two specials, English contractions, letter runs,
# single digits, and runs of anything else that is neither space, letter nor digit.
CLIP_SPLIT_PATTERN = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)

# Hugging Face writes this when model_max_length was never set (int(1e30)); treat as unset.
_UNSET_MAX_LENGTH = 10**20


# --------------------------------------------------------------------------------------------
# The fast tokenizer pipeline
# --------------------------------------------------------------------------------------------


def build_clip_tokenizer(
    vocab: dict[str, int],
    merges: Sequence[tuple[str, str]],
    *,
    bos_token: str = BOS_TOKEN,
    eos_token: str = EOS_TOKEN,
    unk_token: str = EOS_TOKEN,
) -> Tokenizer:
    """Build the CLIP tokenizer pipeline (the same one Hugging Face's ``CLIPTokenizer`` builds).

    normalise (NFC, collapse whitespace runs to one space, lowercase) -> split on the CLIP pattern
    (keeping the matches, dropping what lies between, i.e. the spaces) -> byte-level alphabet ->
    BPE with ``</w>`` marking word ends -> ``bos ... eos``.
    """
    for name, tok in (("bos_token", bos_token), ("eos_token", eos_token), ("unk_token", unk_token)):
        if tok not in vocab:
            raise ValueError(f"{name} {tok!r} is not in the vocabulary")
    tokenizer = Tokenizer(
        BPE(
            vocab=dict(vocab),
            merges=[tuple(m) for m in merges],
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix=END_OF_WORD,
            unk_token=unk_token,
            fuse_unk=False,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(
        (eos_token, vocab[eos_token]),
        (bos_token, vocab[bos_token]),
        trim_offsets=False,
        add_prefix_space=False,
    )
    # Specials must be matched whole before normalisation/BPE (they are already in the vocab).
    tokenizer.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t in dict.fromkeys([bos_token, eos_token, unk_token])
        ]
    )
    return tokenizer


def train_clip_vocab(texts: Iterable[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn a small CLIP-style BPE vocabulary (CLIP's normalisation, splitting and id layout) from
    ``texts``; for models trained by the project, where OpenAI's 49,408-token vocabulary is too big."""
    base = 2 * 256 + 2
    if vocab_size <= base:
        raise ValueError(f"vocab_size must exceed {base} (byte symbols, with </w>, and two specials)")
    trainer_tok = build_clip_tokenizer(clip_vocab_from_merges([]), [])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2,  # the trainer counts its alphabet and merges; the specials come after
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix=END_OF_WORD,
        show_progress=False,
    )
    trainer_tok.train_from_iterator(texts, trainer)
    merges = backend_vocab(trainer_tok)[1]
    return clip_vocab_from_merges(merges), merges


def backend_vocab(tokenizer: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a BPE ``tokenizers.Tokenizer`` (merges are "a b" strings or pairs by version)."""
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


# --------------------------------------------------------------------------------------------
# The user-facing tokenizer
# --------------------------------------------------------------------------------------------


class BatchEncoding(dict):
    """A dict of model inputs (``input_ids``, ``attention_mask``, ``pixel_values``...) that also
    allows attribute access (``enc.input_ids``) and moving all tensors with ``.to(device)``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: str | torch.device) -> BatchEncoding:
        return BatchEncoding({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


def _token_content(value: Any) -> str | None:
    """A special token as written in HF config files: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _to_id_lists(ids: Any) -> list[list[int]]:
    """Token ids as tensor/array/list (1-D or 2-D) -> list of lists of int."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().tolist()
    elif isinstance(ids, np.ndarray):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [[ids]]
    ids = list(ids)
    if ids and not isinstance(ids[0], int):
        return [[int(i) for i in row] for row in ids]
    return [[int(i) for i in ids]]


class CLIPTokenizer:
    """CLIP tokenizer with Hugging Face-compatible call semantics.

    ``tok(["a cat", "a dog"])`` -> ``{"input_ids": (N,L) int64, "attention_mask": (N,L) int64}``,
    each row ``bos ... eos`` then padding. Sequences longer than ``max_length`` (77) are cut so
    that ``eos`` stays last, as in Hugging Face.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        bos_token: str = BOS_TOKEN,
        eos_token: str = EOS_TOKEN,
        pad_token: str = EOS_TOKEN,
        unk_token: str = EOS_TOKEN,
        model_max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        # The stateful options of the backend stay off: padding/truncation happen per call.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = (
            bos_token,
            eos_token,
            pad_token,
            unk_token,
        )
        ids = {}
        for name, tok in (("bos", bos_token), ("eos", eos_token), ("pad", pad_token), ("unk", unk_token)):
            tid = tokenizer.token_to_id(tok)
            if tid is None:
                raise ValueError(f"{name} token {tok!r} is not in the tokenizer's vocabulary")
            ids[name] = tid
        self.bos_token_id: int = ids["bos"]
        self.eos_token_id: int = ids["eos"]
        self.pad_token_id: int = ids["pad"]
        self.unk_token_id: int = ids["unk"]
        if model_max_length < 2:
            raise ValueError(f"model_max_length must be >= 2 (room for bos and eos), got {model_max_length}")
        self.model_max_length = int(model_max_length)

    # ---- construction --------------------------------------------------------------------

    @classmethod
    def from_vocab(
        cls, vocab: dict[str, int], merges: Sequence[tuple[str, str]], **kwargs: Any
    ) -> CLIPTokenizer:
        """Build from an in-memory vocabulary and merges (see :func:`clip_vocab_from_bpe`)."""
        specials = {k: kwargs[k] for k in ("bos_token", "eos_token", "unk_token") if k in kwargs}
        return cls(build_clip_tokenizer(vocab, merges, **specials), **kwargs)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> CLIPTokenizer:
        """Load from a checkpoint folder: ``tokenizer.json`` if present, else ``vocab.json`` +
        ``merges.txt``. Special tokens and ``model_max_length`` come from ``tokenizer_config.json``
        and ``special_tokens_map.json`` when present."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder not found: {folder}")
        settings = cls._read_settings(folder)
        specials = {k: settings[k] for k in ("bos_token", "eos_token", "unk_token")}
        if (folder / "tokenizer.json").is_file():
            try:
                backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
            except Exception as e:  # tokenizers raises a bare Exception on malformed files
                raise ValueError(f"{folder / 'tokenizer.json'}: cannot be loaded ({e})") from e
        else:
            missing = [n for n in ("vocab.json", "merges.txt") if not (folder / n).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{folder}: no tokenizer.json and missing {', '.join(missing)} "
                    "(need tokenizer.json, or vocab.json + merges.txt)"
                )
            vocab, merges = read_vocab_files(folder)
            backend = build_clip_tokenizer(vocab, merges, **specials)
        return cls(backend, **settings)

    @staticmethod
    def _read_settings(folder: Path) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "pad_token": EOS_TOKEN,
            "unk_token": EOS_TOKEN,
            "model_max_length": DEFAULT_MAX_LENGTH,
        }
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            path = folder / name
            if not path.is_file():
                continue
            data = read_json_object(path)
            for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
                content = _token_content(data.get(key))
                if content is not None:
                    settings[key] = content
            max_len = data.get("model_max_length")
            if isinstance(max_len, int) and 0 < max_len < _UNSET_MAX_LENGTH:
                settings["model_max_length"] = max_len
        return settings

    # ---- properties ----------------------------------------------------------------------

    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (49,408 for CLIP; the specials are part of it)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    # ---- encoding ------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str],
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchEncoding:
        """Tokenise one text or a list of texts.

        padding: True/"longest" pads to the longest row, "max_length" to ``max_length``,
        False/"do_not_pad" not at all. truncation cuts rows longer than ``max_length``
        (default ``model_max_length``) keeping ``eos`` last. return_tensors: "pt" -> int64
        tensors (N,L), "np" -> int64 arrays, None -> lists (flat lists for a single string).
        """
        texts, single = self._check_texts(text)
        if padding is True or padding == "longest":
            pad_mode = "longest"
        elif padding is False or padding is None or padding == "do_not_pad":
            pad_mode = None
        elif padding == "max_length":
            pad_mode = "max_length"
        else:
            raise ValueError(
                f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}"
            )
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        limit = self.model_max_length if max_length is None else int(max_length)
        if truncation and limit < 2:
            raise ValueError(f"max_length must be >= 2 (room for bos and eos), got {limit}")

        rows = [enc.ids for enc in self._tokenizer.encode_batch(texts, add_special_tokens=True)]
        if truncation:
            rows = [r if len(r) <= limit else r[: limit - 1] + [self.eos_token_id] for r in rows]
        masks = [[1] * len(r) for r in rows]
        if pad_mode is not None:
            width = max(len(r) for r in rows) if pad_mode == "longest" else max(limit, *map(len, rows))
            rows = [r + [self.pad_token_id] * (width - len(r)) for r in rows]
            masks = [m + [0] * (width - len(m)) for m in masks]

        if return_tensors is None:
            if single:
                return BatchEncoding(input_ids=rows[0], attention_mask=masks[0])
            return BatchEncoding(input_ids=rows, attention_mask=masks)
        if len({len(r) for r in rows}) > 1:
            raise ValueError("texts tokenise to different lengths; use padding=True to return tensors")
        ids_np = np.asarray(rows, dtype=np.int64)  # (N, L)
        mask_np = np.asarray(masks, dtype=np.int64)  # (N, L)
        if return_tensors == "np":
            return BatchEncoding(input_ids=ids_np, attention_mask=mask_np)
        return BatchEncoding(input_ids=torch.from_numpy(ids_np), attention_mask=torch.from_numpy(mask_np))

    @staticmethod
    def _check_texts(text: str | Sequence[str]) -> tuple[list[str], bool]:
        single = isinstance(text, str)
        texts = [text] if single else text
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")
        if len(texts) == 0:
            raise ValueError("no text given: expected a non-empty str or a non-empty list of str")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text[{i}] must be a str, got {type(t).__name__}")
            if not t.strip():
                raise ValueError(f"text[{i}] is empty or only whitespace: {t!r}")
        return list(texts), single

    # ---- decoding ------------------------------------------------------------------------

    def _decode_row(self, ids: list[int], skip_special_tokens: bool) -> str:
        text = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        # Byte-level decoding leaves the end-of-word markers in: they are the word spaces.
        return text.replace(END_OF_WORD, " ").strip()

    def decode(self, token_ids: Any, skip_special_tokens: bool = False) -> str:
        """Ids of one sequence (list, 1-D tensor/array, or a batch of one) -> text."""
        rows = _to_id_lists(token_ids)
        if len(rows) != 1:
            raise ValueError(f"decode expects one sequence, got {len(rows)}; use batch_decode")
        return self._decode_row(rows[0], skip_special_tokens)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        """A batch of id sequences (list of lists, or a 2-D tensor/array) -> list of texts."""
        return [self._decode_row(r, skip_special_tokens) for r in _to_id_lists(sequences)]

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str | None]:
        return [self._tokenizer.id_to_token(int(i)) for i in ids]

    # ---- saving --------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> list[Path]:
        """Write tokenizer.json, vocab.json, merges.txt, tokenizer_config.json and
        special_tokens_map.json (readable by this class and by Hugging Face's CLIPTokenizer)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tok_path = folder / "tokenizer.json"
        self._tokenizer.save(str(tok_path))
        vocab_path, merges_path = write_vocab_files(*backend_vocab(self._tokenizer), folder)
        specials = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "unk_token": self.unk_token,
        }
        config = {
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": self.model_max_length,
            "do_lower_case": True,
            "add_prefix_space": False,
            "errors": "replace",
            **specials,
        }
        config_path = folder / "tokenizer_config.json"
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        map_path = folder / "special_tokens_map.json"
        map_path.write_text(json.dumps(specials, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return [tok_path, vocab_path, merges_path, config_path, map_path]

    def __repr__(self) -> str:
        return (
            f"CLIPTokenizer(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
            f"bos={self.bos_token!r}, eos={self.eos_token!r}, pad={self.pad_token!r})"
        )
