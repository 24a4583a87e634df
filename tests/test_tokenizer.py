"""CLIP tokenizer: token-for-token parity with Hugging Face's CLIPTokenizer (the test oracle),
vocabulary construction, save/load round trips and error cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from xclip_stream.model.tokenizer import (
    BOS_TOKEN,
    CLIP_VOCAB_SIZE,
    EOS_TOKEN,
    BatchEncoding,
    CLIPTokenizer,
    build_clip_tokenizer,
    bytes_to_unicode,
    clip_vocab_from_bpe,
    read_vocab_files,
)

LONG_TEXT = " ".join(f"word{i} and, more; punctuation!" for i in range(40))  # ~280 tokens

TRICKY_TEXTS = [
    "a photo of a cat",
    "Playing Sports",
    "EATING SPAGHETTI",
    "don't stop, it's what we'd've done; I'm sure they'll",
    "'s 't 're 've 'm 'll 'd",
    "pi is 3.14 and 1,000,000 is a million; 2024-06-01 12:30",
    "Hello, world!!! ... ?!? (parentheses) [brackets] {braces} #hashtag @user $5 100%",
    "café naïve résumé Über façade e\u0301",  # precomposed and combining accents (NFC)
    "emoji 😀🎉👍🏽 and flags 🇫🇷",
    "中文字符 日本語のテキスト 한국어",
    "Ελληνικά русский текст العربية",
    "  leading and trailing   spaces  ",
    "tabs\tand\nnewlines\r\n and\u00a0nbsp\u2003em-space",
    "\u200bzero\u200bwidth",
    "!",
    "'",
    "x",
    "a" * 300,
    "<|startoftext|> literal specials <|endoftext|> inside",
    "under_score snake_case CamelCase http://example.com/path?q=1&r=2",
    LONG_TEXT,
]


@pytest.fixture(scope="module")
def hf_tokenizer(clip_vocab_dir):
    return transformers.CLIPTokenizer.from_pretrained(str(clip_vocab_dir))


@pytest.fixture(scope="module")
def tokenizer(clip_vocab_dir) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(clip_vocab_dir)


# ---- vocabulary ---------------------------------------------------------------------------


def test_bytes_to_unicode_is_a_printable_bijection():
    mapping = bytes_to_unicode()
    assert sorted(mapping) == list(range(256))
    chars = list(mapping.values())
    assert len(set(chars)) == 256
    assert all(c.isprintable() and not c.isspace() for c in chars)
    assert mapping[ord("a")] == "a" and mapping[ord(" ")] == "\u0120"  # space -> 'Ġ'
    assert chars[0] == "!"  # CLIP id 0


def test_vocab_matches_clip_layout(clip_vocab_dir):
    vocab, merges = read_vocab_files(clip_vocab_dir)
    assert len(vocab) == CLIP_VOCAB_SIZE and len(merges) == 48894
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["".join(merges[0])] == 512 and vocab["".join(merges[-1])] == 49405
    assert sorted(vocab.values()) == list(range(CLIP_VOCAB_SIZE))
    assert (clip_vocab_dir / "merges.txt").read_text().startswith("#version: 0.2\n")


def test_vocab_from_bpe_equals_written_files(clip_vocab_dir):
    vocab, merges = clip_vocab_from_bpe(clip_vocab_dir / "bpe_simple_vocab_16e6.txt.gz")
    assert (vocab, merges) == read_vocab_files(clip_vocab_dir)


def test_backend_pipeline_equals_transformers(tokenizer, hf_tokenizer):
    ours = json.loads(tokenizer.backend_tokenizer.to_str())
    theirs = json.loads(hf_tokenizer.backend_tokenizer.to_str())
    assert ours == theirs


def test_known_ids(tokenizer):
    # Ids of the released CLIP vocabulary.
    assert tokenizer("a photo of a cat").input_ids.tolist() == [[49406, 320, 1125, 539, 320, 2368, 49407]]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert tokenizer.vocab_size == CLIP_VOCAB_SIZE and len(tokenizer) == CLIP_VOCAB_SIZE
    assert tokenizer.model_max_length == 77


# ---- parity -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_single_text_parity(tokenizer, hf_tokenizer, text):
    ours = tokenizer(text, return_tensors="pt")
    theirs = hf_tokenizer(text, padding=True, truncation=True, max_length=77, return_tensors="pt")
    assert ours.input_ids.dtype == torch.int64
    assert torch.equal(ours.input_ids, theirs["input_ids"])
    assert torch.equal(ours.attention_mask, theirs["attention_mask"])
    # Without tensors a single string gives flat lists, like transformers.
    plain = tokenizer(text, return_tensors=None)
    assert plain["input_ids"] == hf_tokenizer(text, truncation=True, max_length=77)["input_ids"]


@pytest.mark.parametrize("padding", [True, "longest", "max_length"])
def test_batch_parity(tokenizer, hf_tokenizer, padding):
    ours = tokenizer(TRICKY_TEXTS, padding=padding, return_tensors="pt")
    theirs = hf_tokenizer(TRICKY_TEXTS, padding=padding, truncation=True, max_length=77, return_tensors="pt")
    assert ours.input_ids.shape == (len(TRICKY_TEXTS), 77)  # LONG_TEXT reaches the limit either way
    assert torch.equal(ours.input_ids, theirs["input_ids"])
    assert torch.equal(ours.attention_mask, theirs["attention_mask"])


@pytest.mark.parametrize("padding", [True, "max_length"])
def test_short_batch_parity(tokenizer, hf_tokenizer, padding):
    texts = ["playing sports", "eating spaghetti", "go shopping", "a"]
    ours = tokenizer(texts, padding=padding, return_tensors="np")
    theirs = hf_tokenizer(texts, padding=padding, truncation=True, max_length=77, return_tensors="np")
    assert ours.input_ids.dtype == np.int64
    assert ours.input_ids.shape == ((4, 4) if padding is True else (4, 77))
    np.testing.assert_array_equal(ours.input_ids, theirs["input_ids"])
    np.testing.assert_array_equal(ours.attention_mask, theirs["attention_mask"])


def test_truncation_keeps_eos_last(tokenizer, hf_tokenizer):
    enc = tokenizer(LONG_TEXT)
    assert enc.input_ids.shape == (1, 77)
    assert enc.input_ids[0, 0] == tokenizer.bos_token_id and enc.input_ids[0, -1] == tokenizer.eos_token_id
    assert enc.attention_mask.all()
    short = tokenizer(LONG_TEXT, max_length=10)
    ref = hf_tokenizer(LONG_TEXT, truncation=True, max_length=10, return_tensors="pt")
    assert torch.equal(short.input_ids, ref["input_ids"])
    untruncated = tokenizer(LONG_TEXT, truncation=False)
    assert untruncated.input_ids.shape[1] > 77


def test_decode_parity(tokenizer, hf_tokenizer):
    texts = TRICKY_TEXTS[:12]
    enc = tokenizer(texts)
    for skip in (False, True):
        ours = tokenizer.batch_decode(enc.input_ids, skip_special_tokens=skip)
        theirs = hf_tokenizer.batch_decode(enc.input_ids, skip_special_tokens=skip)
        assert ours == theirs
    row = enc.input_ids[0]
    assert tokenizer.decode(row, skip_special_tokens=True) == "a photo of a cat"
    assert tokenizer.decode(row.tolist()) == hf_tokenizer.decode(row.tolist())


def test_batch_encoding_attribute_access(tokenizer):
    enc = tokenizer(["a", "b c"])
    assert isinstance(enc, BatchEncoding) and isinstance(enc, dict)
    assert enc.input_ids is enc["input_ids"]
    with pytest.raises(AttributeError):
        _ = enc.pixel_values
    assert enc.to("cpu").input_ids.device.type == "cpu"


# ---- save / load --------------------------------------------------------------------------


def test_save_pretrained_round_trip(tokenizer, hf_tokenizer, tmp_path):
    written = tokenizer.save_pretrained(tmp_path)
    names = {p.name for p in written}
    assert names == {
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    reloaded = CLIPTokenizer.from_pretrained(tmp_path)  # via tokenizer.json
    assert reloaded.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    assert reloaded.model_max_length == 77 and reloaded.pad_token_id == tokenizer.pad_token_id
    a, b = tokenizer(TRICKY_TEXTS), reloaded(TRICKY_TEXTS)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)

    # Without tokenizer.json it rebuilds from vocab.json + merges.txt to the same pipeline.
    (tmp_path / "tokenizer.json").unlink()
    from_files = CLIPTokenizer.from_pretrained(tmp_path)
    assert json.loads(from_files.backend_tokenizer.to_str()) == json.loads(
        tokenizer.backend_tokenizer.to_str()
    )

    # transformers reads what we wrote.
    hf_reloaded = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    ref = hf_tokenizer(TRICKY_TEXTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    assert hf_reloaded.model_max_length == 77
    assert torch.equal(
        hf_reloaded(TRICKY_TEXTS, padding=True, truncation=True, return_tensors="pt")["input_ids"],
        ref["input_ids"],
    )


def test_reads_hf_style_configs(clip_vocab_dir, tmp_path):
    # Hub files may store specials as AddedToken dicts and an unset model_max_length as 1e30.
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((clip_vocab_dir / name).read_bytes())
    added = {
        "content": "<|startoftext|>",
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": int(1e30), "bos_token": added})
    )
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))
    tok = CLIPTokenizer.from_pretrained(tmp_path)
    assert tok.model_max_length == 77 and tok.bos_token == "<|startoftext|>"
    assert tok.pad_token_id == 0
    assert tok(["a", "a b"]).input_ids[0].tolist() == [49406, 320, 49407, 0]


def test_build_clip_tokenizer_directly(clip_vocab_dir, tokenizer):
    vocab, merges = read_vocab_files(clip_vocab_dir)
    backend = build_clip_tokenizer(vocab, merges)
    assert backend.encode("a photo of a cat").ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (
        CLIPTokenizer.from_vocab(vocab, merges)("x").input_ids.tolist() == tokenizer("x").input_ids.tolist()
    )


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [[], "", "   ", ["ok", ""], ["\t\n"]])
def test_empty_text_raises(tokenizer, bad):
    with pytest.raises(ValueError, match="no text given|empty"):
        tokenizer(bad)


@pytest.mark.parametrize("bad", [None, 3, ["ok", 3], b"bytes"])
def test_non_text_raises(tokenizer, bad):
    with pytest.raises(TypeError):
        tokenizer(bad)


def test_bad_options_raise(tokenizer):
    with pytest.raises(ValueError, match="padding"):
        tokenizer("a", padding="sideways")
    with pytest.raises(ValueError, match="return_tensors"):
        tokenizer("a", return_tensors="tf")
    with pytest.raises(ValueError, match="padding=True"):
        tokenizer(["a", "a b c"], padding=False, return_tensors="pt")
    assert tokenizer(["a", "a b c"], padding=False, return_tensors=None).input_ids == [
        [49406, 320, 49407],
        [49406, 320, 321, 322, 49407],
    ]
    with pytest.raises(ValueError, match="one sequence"):
        tokenizer.decode([[1, 2], [3, 4]])


def test_missing_files_raise(tmp_path, clip_vocab_dir):
    with pytest.raises(FileNotFoundError, match="not found"):
        CLIPTokenizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"vocab\.json, merges\.txt"):
        CLIPTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_bytes((clip_vocab_dir / "vocab.json").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"missing merges\.txt") as info:
        CLIPTokenizer.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_malformed_files_raise(tmp_path, clip_vocab_dir):
    (tmp_path / "vocab.json").write_text("{not json")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        CLIPTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2}))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        CLIPTokenizer.from_pretrained(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(ValueError, match="expected a merge"):
        CLIPTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot be loaded"):
        CLIPTokenizer.from_pretrained(tmp_path)
    bad_bpe = tmp_path / "short.txt"
    bad_bpe.write_text("#header\na b\n")
    with pytest.raises(ValueError, match="expected a merge|expected at least"):
        clip_vocab_from_bpe(bad_bpe)


def test_trained_small_vocab_keeps_clip_layout_and_loads_in_transformers(tmp_path):
    """A project-trained vocabulary: CLIP's pipeline and id layout, end-of-text the largest id, and a
    folder transformers' CLIPTokenizer reads to the same ids."""
    from xclip_stream.model.tokenizer import train_clip_vocab

    texts = ["a red circle moving left", "a blue square moving right", "a green triangle growing"] * 5
    vocab, merges = train_clip_vocab(texts, vocab_size=600)
    assert 514 < len(vocab) <= 600 and merges
    assert vocab[EOS_TOKEN] == max(vocab.values()) and vocab[BOS_TOKEN] == len(vocab) - 2
    ours = CLIPTokenizer.from_vocab(vocab, merges)
    ours.save_pretrained(tmp_path)
    reference = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    queries = ["a red circle moving left", "A BLUE triangle, shrinking!", "unseen wörds 42"]
    assert ours(queries, padding=True)["input_ids"].tolist() == reference(queries, padding=True)["input_ids"]
    assert len(ours("a red circle moving left")["input_ids"][0]) < 10  # words were merged, not spelled out
    with pytest.raises(ValueError, match="vocab_size must exceed"):
        train_clip_vocab(texts, vocab_size=100)
