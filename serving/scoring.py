"""Batch scoring: a file streamed through the production model in chunks, into a CSV or Parquet file.

The input is read `chunk_rows` rows at a time (CSV/TSV through pandas' chunked reader, with ingest's
delimiter sniffing; Parquet by record batches), so memory follows the chunk, not the file. Each family
reads what ingest reads: a table for tabular and text models (any columns, extra ones and the label kept),
and for images a folder of class sub-folders (or of image files) or MNIST-style IDX files. A chunk is
encoded column-wise (tabular: the same numbers as `tasks.features.encode_records` on the same rows, without
a dict per row), run through onnxruntime and written at once: the input's columns (for images, the path),
then `prediction` and one `probability_<label>` per label, rows in input order. The output is written to
a temp file beside --out and moved into place at the end, so a failed run leaves an existing file as it was.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from serving.inputs import InputError, decode_image
from serving.model import PROBABILITIES, LoadedModel
from tasks.errors import ShipyardError
from tasks.features import FeatureSpec, category_key
from tasks.io import atomic_write

if TYPE_CHECKING:
    import pyarrow as pa

TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
OUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
IDX_SUFFIXES = ("idx3-ubyte", "idx3-ubyte.gz")
PREDICTION = "prediction"
PROBABILITY = "probability_"
MODEL_BATCH = {"text": 128, "image": 256}  # rows per onnxruntime run (tabular: the whole chunk)
IMAGE_CHUNK_BYTES = 256 << 20  # decoded pixels held at once: caps the image chunk below --chunk-rows
LARGE_BYTES = 16 << 20  # a CSV this big gets a progress bar (its row count is not known in advance)
NUMBER_TYPES = {"string", "empty", "integer", "floating", "mixed-integer-float", "decimal"}


class ScoringError(ShipyardError):
    """The input or output of a scoring run is not usable: named with the file, row and column."""


@dataclass
class Chunk:
    """Consecutive rows of the input; `start` is the 1-based number of the first (header not counted)."""

    start: int
    frame: pd.DataFrame  # the input's columns (images: the path)
    table: pa.Table | None = None  # the same rows as Arrow (Parquet input: written back with its types)
    images: list[Any] | None = None  # images: per row a file Path or a pixel array


@dataclass
class Source:
    """An input opened for scoring: its chunks, and how many rows it holds when that is known."""

    path: Path
    chunks: Iterator[Chunk]
    total: int | None
    size_bytes: int
    text_column: str | None = None  # text models: the column scored

    def is_large(self, chunk_rows: int) -> bool:
        """Worth a progress bar: more than one chunk, or a big file of unknown length."""
        return self.total > chunk_rows if self.total is not None else self.size_bytes > LARGE_BYTES


@dataclass
class Summary:
    rows: int
    seconds: float
    out: Path

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


# ---- the run --------------------------------------------------------------------------------------------


def check_paths(data: Path, out: Path) -> str:
    """Fail before any model is loaded: missing input, an output that cannot be written. Returns the
    output format (csv, tsv or parquet)."""
    if not data.exists():
        raise ScoringError(f"{data}: file not found")
    out_format = OUT_FORMATS.get(out.suffix.lower())
    if out_format is None:
        raise ScoringError(
            f"--out {out}: unknown suffix '{out.suffix}'; expected .csv, .tsv, .parquet or .pq"
        )
    if not out.parent.is_dir():
        raise ScoringError(f"--out {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise ScoringError(f"--out {out} is a folder; expected a file name")
    if out.resolve() == data.resolve() or (out.exists() and out.samefile(data)):
        raise ScoringError(f"--out {out} is the --data file; write the scores to another file")
    return out_format


def score_file(
    model: LoadedModel,
    data: Path,
    out: Path,
    chunk_rows: int = 10_000,
    text_column: str | None = None,
    on_start: Callable[[Source], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Summary:
    """Score every row of `data` into `out`; `on_progress` gets the number of rows scored so far."""
    out_format = check_paths(data, out)
    source = open_source(model, data, chunk_rows, text_column, exclude=out)
    if on_start is not None:
        on_start(source)
    started, rows = time.perf_counter(), 0

    def write(tmp: Path) -> None:
        nonlocal rows
        with open_writer(tmp, out_format) as append:
            for chunk in source.chunks:
                append(chunk, score_chunk(model, chunk, source.text_column))
                rows += len(chunk.frame)
                if on_progress is not None:
                    on_progress(rows)

    try:
        atomic_write(out, write)
    except OSError as err:  # reading errors are ScoringErrors already: a full disk, a read-only folder
        raise ScoringError(f"--out {out}: cannot write: {err.strerror or err}") from None
    return Summary(rows=rows, seconds=time.perf_counter() - started, out=out)


def score_chunk(model: LoadedModel, chunk: Chunk, text_column: str | None) -> pd.DataFrame:
    """`prediction` and `probability_<label>` for the chunk's rows (no rows: the empty columns)."""
    if chunk.frame.empty:
        probabilities = np.zeros((0, len(model.labels)), np.float32)
    elif model.task == "image":
        probabilities = score_images(model, chunk)
    elif model.task == "text":
        probabilities = score_texts(model, texts_of(chunk.frame[text_column or ""]))
    else:
        probabilities = run_model(
            model, {model.input_name: encode_columns(chunk.frame, model.spec, chunk.start)}
        )
    return scores_frame(model.labels, probabilities)


def run_model(model: LoadedModel, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """One onnxruntime run; the probabilities checked as the server checks them."""
    probabilities = model.run(inputs, [PROBABILITIES])[PROBABILITIES]
    rows = len(next(iter(inputs.values())))
    if probabilities.shape != (rows, len(model.labels)) or not np.isfinite(probabilities).all():
        raise ScoringError(
            f"{model.name} {model.version} returned probabilities of shape {probabilities.shape} "
            f"(expected ({rows}, {len(model.labels)}), all finite)"
        )
    return probabilities


def scores_frame(labels: Sequence[Any], probabilities: np.ndarray) -> pd.DataFrame:
    """The output's own columns; the prediction keeps the labels' type (text where they mix types)."""
    same_type = len({type(label) for label in labels}) == 1
    values = pd.Series(labels if same_type else [str(label) for label in labels])
    frame = pd.DataFrame({PREDICTION: values.iloc[probabilities.argmax(axis=1)].to_numpy()})
    for index, label in enumerate(labels):
        frame[f"{PROBABILITY}{label}"] = probabilities[:, index].astype(np.float32)
    return frame


# ---- opening the input ----------------------------------------------------------------------------------


def open_source(
    model: LoadedModel, data: Path, chunk_rows: int, text_column: str | None, exclude: Path | None = None
) -> Source:
    """The input as the model's family reads it; a file of the wrong kind is an error saying what fits."""
    if model.task == "image":
        return open_images(model, data, chunk_rows, exclude)
    fmt = table_format(data)
    size = data.stat().st_size if data.is_file() else 0
    chunks = numbered(read_table_chunks(data, fmt, chunk_rows))
    first = next(chunks)
    if model.task == "text":
        text_column = resolve_text_column(model, data, first.frame, text_column)
    check_columns(model, data, first, text_column)
    total = parquet_rows(data) if fmt == "parquet" else None
    return Source(data, _prepend(first, chunks), total, size, text_column)


def table_format(data: Path) -> str:
    """csv, tsv or parquet, by the suffix (a folder is a Parquet dataset)."""
    if data.is_dir():
        if not any(data.rglob("*.parquet")):
            raise ScoringError(f"{data}: a folder without Parquet files; this model scores a table")
        return "parquet"
    fmt = TABLE_FORMATS.get(data.suffix.lower())
    if fmt is None:
        raise ScoringError(
            f"{data}: unknown suffix '{data.suffix}'; this model scores a table: .csv, .tsv, .parquet or .pq"
        )
    return fmt


def read_table_chunks(
    data: Path, fmt: str, chunk_rows: int
) -> Iterator[tuple[pd.DataFrame, pa.Table | None]]:
    """(frame, Arrow table or None) of at most `chunk_rows` rows; at least one (empty: header only)."""
    if fmt == "parquet":
        for table in parquet_tables(data, chunk_rows):
            yield table.to_pandas(), table
        return
    from tasks.contract_check import iter_chunks  # ingest's sniffing, BOM and error messages

    for frame in iter_chunks(data, chunk_rows):
        yield frame, None


def numbered(chunks: Iterator[tuple[pd.DataFrame, pa.Table | None]]) -> Iterator[Chunk]:
    start = 1
    for frame, table in chunks:
        yield Chunk(start=start, frame=frame.reset_index(drop=True), table=table)
        start += len(frame)


def parquet_tables(data: Path, chunk_rows: int) -> Iterator[pa.Table]:
    """A Parquet file or dataset folder in tables of exactly `chunk_rows` rows (the last shorter).

    Each file is read by record batches (row group by row group); the dataset scanner would read ahead
    far more than one chunk.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        files, schema = parquet_files(data)
        pending, yielded = schema.empty_table(), False
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=min(chunk_rows, 1 << 20)):
                table = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
                pending = pa.concat_tables([pending, table])
                while pending.num_rows >= chunk_rows:
                    yield pending.slice(0, chunk_rows)
                    pending, yielded = pending.slice(chunk_rows), True
        if pending.num_rows or not yielded:
            yield pending
    except (pa.ArrowException, OSError, ValueError, KeyError) as err:
        message = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ScoringError(f"{data}: cannot read as Parquet: {message}") from None


def parquet_files(data: Path) -> tuple[list[str], pa.Schema]:
    """The file, or a folder's Parquet files in order, and the schema they are read in (the first's)."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(data, format="parquet")
    return list(dataset.files), dataset.schema.remove_metadata()


def parquet_rows(data: Path) -> int | None:
    import pyarrow.parquet as pq

    try:
        return sum(pq.ParquetFile(file).metadata.num_rows for file in parquet_files(data)[0])
    except Exception:  # the reader reports an unreadable file with its own message
        return None


def check_columns(model: LoadedModel, data: Path, first: Chunk, text_column: str | None) -> None:
    """The model's columns are all in the file, and the output's own names are not."""
    own = {PREDICTION, *(f"{PROBABILITY}{label}" for label in model.labels)}
    taken = [c for c in first.frame.columns if c in own]
    if taken:
        raise ScoringError(f"{data}: columns {taken} would be overwritten by the scores; rename them")
    needed = [text_column] if model.task == "text" else model.spec.columns if model.spec else []
    missing = [c for c in needed if c not in first.frame.columns]
    if missing:
        what = "text column" if model.task == "text" else "feature column(s)"
        hint = "; name the column of texts with --text-column" if model.task == "text" else ""
        columns = ", ".join(map(str, first.frame.columns[:20]))
        raise ScoringError(
            f"{data}: missing {what} {missing} (chunk starting at row {first.start}); "
            f"the file has: {columns}{hint}"
        )


def _prepend(first: Chunk, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    yield first
    yield from rest


# ---- text -----------------------------------------------------------------------------------------------


def resolve_text_column(model: LoadedModel, data: Path, frame: pd.DataFrame, given: str | None) -> str:
    """--text-column, else the column the model was trained on, else ingest's detection on the first rows."""
    if given or (given := model_text_column(model)):
        return given
    from tasks.texts import find_text_column

    target = model.manifest.get("target") or ""
    found = find_text_column(frame, target)
    others = [c for c in frame.columns if c != target]
    if found is None and len(others) == 1:
        found = others[0]
    if found is None:
        columns = ", ".join(map(str, frame.columns[:20]))
        raise ScoringError(
            f"{data}: which column holds the texts? name it with --text-column (columns: {columns})"
        )
    return str(found)


def model_text_column(model: LoadedModel) -> str | None:
    """The text column the manifest, its params or the published profile/contract name."""
    manifest = model.manifest
    params = (manifest.get("params") or {}).get("ingest") or {}
    named = [manifest.get("text_column"), (manifest.get("preprocessing") or {}).get("text_column")]
    named += [params.get("text_column")]
    for key, path in (("profile", ["text_column"]), ("contract", ["meta", "shipyard", "text_column"])):
        named.append(_json_value(model.folder, manifest.get(key), path))
    return next((name for name in named if isinstance(name, str) and name), None)


def _json_value(folder: Path | None, name: Any, path: list[str]) -> Any:
    if folder is None or not isinstance(name, str):
        return None
    try:
        value = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def texts_of(series: pd.Series) -> list[str]:
    """A text cell as the model takes it: missing becomes "" (the model answers for it), others str()."""
    return ["" if _missing(v) else v if isinstance(v, str) else str(v) for v in series.tolist()]


def score_texts(model: LoadedModel, texts: list[str]) -> np.ndarray:
    """In batches of texts of similar length (less padding); the answers put back in input order."""
    order = np.argsort([len(text) for text in texts], kind="stable")
    probabilities = np.empty((len(texts), len(model.labels)), np.float32)
    batch = MODEL_BATCH["text"]
    for begin in range(0, len(texts), batch):
        index = order[begin : begin + batch]
        probabilities[index] = run_model(model, model.encode([texts[i] for i in index]))
    return probabilities


# ---- images ---------------------------------------------------------------------------------------------


def open_images(model: LoadedModel, data: Path, chunk_rows: int, exclude: Path | None) -> Source:
    """An image folder (class sub-folders, or images directly in it) or IDX files, as chunks of images."""
    assert model.image is not None
    size = model.image
    rows = max(1, min(chunk_rows, IMAGE_CHUNK_BYTES // (size.height * size.width * size.channels)))
    idx = idx_files(data)
    if idx:
        counts = [idx_count(file) for file in idx]
        return Source(data, idx_chunks(idx, rows), sum(counts), sum(f.stat().st_size for f in idx))
    if data.is_file():
        raise ScoringError(
            f"{data}: this image model scores a folder of images (class sub-folders or images directly "
            "in it) or MNIST-style *-idx3-ubyte[.gz] files"
        )
    files = image_files(data, exclude)
    if not files:
        raise ScoringError(f"{data}: no image files in this folder")
    return Source(data, file_chunks(data, files, rows), len(files), 0)


def image_files(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Every non-hidden file under `folder`, sorted by relative path (ingest's order), --out left out."""
    skip = exclude.resolve() if exclude is not None else None
    files = (f for f in folder.rglob("*") if f.is_file() and f.resolve() != skip)
    visible = (f for f in files if not any(p.startswith(".") for p in f.relative_to(folder).parts))
    return sorted(visible, key=lambda f: f.relative_to(folder).as_posix())


def file_chunks(folder: Path, files: list[Path], rows: int) -> Iterator[Chunk]:
    for begin in range(0, len(files), rows):
        part = files[begin : begin + rows]
        frame = pd.DataFrame({"path": [f.relative_to(folder).as_posix() for f in part]})
        yield Chunk(start=begin + 1, frame=frame, images=list(part))


def idx_files(data: Path) -> list[Path]:
    if data.is_file():
        return [data] if data.name.endswith(IDX_SUFFIXES) else []
    return sorted(f for f in data.iterdir() if f.is_file() and f.name.endswith(IDX_SUFFIXES))


def idx_count(file: Path) -> int:
    """The image count from an IDX header; a file that is not IDX is an error naming it."""
    with _open_idx(file) as handle:
        count, _, _ = _idx_header(file, handle)
    return count


def idx_chunks(files: list[Path], rows: int) -> Iterator[Chunk]:
    """(H, W) uint8 arrays read `rows` images at a time from each IDX file, named `file#index`."""
    start = 1
    for file in files:
        with _open_idx(file) as handle:
            count, height, width = _idx_header(file, handle)
            for begin in range(0, count, rows):
                n = min(rows, count - begin)
                raw = _read(file, handle, n * height * width)
                if len(raw) != n * height * width:
                    raise ScoringError(f"{file}: truncated: the header says {count} images")
                images = list(np.frombuffer(raw, np.uint8).reshape(n, height, width))
                frame = pd.DataFrame({"path": [f"{file.name}#{i}" for i in range(begin, begin + n)]})
                yield Chunk(start=start, frame=frame, images=images)
                start += n


def _open_idx(file: Path) -> Any:
    import gzip

    return gzip.open(file, "rb") if file.name.endswith(".gz") else open(file, "rb")


def _idx_header(file: Path, handle: Any) -> tuple[int, int, int]:
    import struct

    from tasks.images import IDX_IMAGES_MAGIC

    header = _read(file, handle, 16)
    if len(header) < 16 or struct.unpack(">I", header[:4])[0] != IDX_IMAGES_MAGIC:
        raise ScoringError(f"{file}: not an MNIST-style IDX images file (magic number {IDX_IMAGES_MAGIC})")
    _, count, height, width = struct.unpack(">4I", header)
    return count, height, width


def _read(file: Path, handle: Any, size: int) -> bytes:
    try:
        return handle.read(size)
    except (OSError, EOFError) as err:  # a corrupt gzip stream, a failing disk
        raise ScoringError(f"{file}: cannot read: {err}") from None


def score_images(model: LoadedModel, chunk: Chunk) -> np.ndarray:
    """Decoded as the server decodes (in threads: Pillow releases the GIL), run in model batches."""
    assert model.image is not None and chunk.images is not None
    size = model.image

    def decode(item: Any, name: str) -> np.ndarray:
        try:
            return decode_image(item.read_bytes() if isinstance(item, Path) else item, size, name)
        except OSError as err:
            raise ScoringError(f"{name}: cannot read: {err.strerror or err}") from None
        except InputError as err:
            raise ScoringError(str(err)) from None

    paths = chunk.frame["path"].tolist()
    names = [
        str(item) if isinstance(item, Path) else path for item, path in zip(chunk.images, paths, strict=True)
    ]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        pixels = np.stack(list(pool.map(decode, chunk.images, names)))
    batch = MODEL_BATCH["image"]
    parts = [run_model(model, {"pixels": pixels[i : i + batch]}) for i in range(0, len(pixels), batch)]
    return np.concatenate(parts)


# ---- tabular: column-wise encoding ----------------------------------------------------------------------


def encode_columns(frame: pd.DataFrame, spec: FeatureSpec | None, first_row: int = 1) -> np.ndarray:
    """float32 [rows, features] equal to `encode_records(frame.to_dict("records"), spec)`, column by column.

    Errors name the row (`first_row` is the frame's first) and the column; infinities are refused as the
    server refuses them.
    """
    assert spec is not None
    matrix = np.empty((len(frame), len(spec.columns)), np.float32)
    for position, feature in enumerate(spec.numeric):
        matrix[:, position] = numeric_values(frame[feature.name], feature.name, first_row)
    for position, feature in enumerate(spec.categorical, start=len(spec.numeric)):
        matrix[:, position] = category_codes(frame[feature.name], feature.categories)
    check_finite(matrix, frame, spec, first_row)
    return matrix


def numeric_values(series: pd.Series, column: str, first_row: int) -> np.ndarray:
    """float64 of a numeric feature: numbers as they are, text parsed, "" and missing as NaN."""
    if pd.api.types.is_bool_dtype(series.dtype):  # encode_records refuses True/False as numbers
        _fail_at(series, series.notna(), column, first_row)
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.infer_dtype(series, skipna=True) not in NUMBER_TYPES:
        return np.array([_number(v, column, first_row + i) for i, v in enumerate(series.tolist())])
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    doubtful = np.flatnonzero(np.isnan(values) & series.notna().to_numpy())
    for index in doubtful:  # what pandas would not parse, Python's float() may ("1_000"), or it is bad
        values[index] = _number(series.iloc[index], column, first_row + int(index))
    return values


def category_codes(series: pd.Series, categories: list[str]) -> np.ndarray:
    """0 for missing or unseen, i+1 for the i-th training category; looked up once per distinct value."""
    lookup = {key: i + 1 for i, key in enumerate(categories)}
    if series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) not in ("string", "empty"):
        # mixed Python objects: factorize would merge 1, 1.0 and True, whose keys differ
        return np.array([lookup.get(category_key(v), 0) for v in series.tolist()], np.float32)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    table = np.array([lookup.get(category_key(_plain(u)), 0) for u in uniques] + [0], np.float32)
    return table[codes]  # the sentinel -1 picks the trailing 0


def check_finite(matrix: np.ndarray, frame: pd.DataFrame, spec: FeatureSpec, first_row: int) -> None:
    infinite = np.argwhere(np.isinf(matrix))
    if infinite.size:
        row, position = (int(i) for i in infinite[0])
        name = spec.columns[position]
        raise ScoringError(
            f"row {first_row + row}, column '{name}': expected a finite number, got {frame[name].iloc[row]!r}"
        )


def _number(value: Any, column: str, row: int) -> float:
    """One value as `encode_records` reads it: None, "" and other missing markers are NaN."""
    if _missing(value) or (isinstance(value, str) and value == ""):
        return math.nan
    if not isinstance(value, bool | np.bool_):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise ScoringError(f"row {row}, column '{column}': expected a number, got {value!r}")


def _fail_at(series: pd.Series, bad: pd.Series, column: str, first_row: int) -> None:
    if bad.any():
        index = int(np.flatnonzero(bad.to_numpy(dtype=bool))[0])
        _number(series.iloc[index], column, first_row + index)


def _missing(value: Any) -> bool:
    return (
        value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# ---- writing --------------------------------------------------------------------------------------------


class ChunkWriter:
    """Appends each chunk with its scores through Arrow: CSV/TSV (the header once) or Parquet.

    Parquet has one schema per file. Chunks that carry their own Arrow types (Parquet input) or only
    fixed ones (image paths) are written straight, one row group per chunk. Chunks typed by pandas one at
    a time (CSV input: a column may be all empty in one chunk, whole numbers in the next and text later)
    go to a spool of Arrow files beside the output and are written at the end in one widened schema.
    """

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.handle: Any = None  # the CSV file, or the pyarrow ParquetWriter
        self.spool: Spool | None = None

    def write(self, chunk: Chunk, scores: pd.DataFrame) -> None:
        import pyarrow as pa

        table = chunk.table if chunk.table is not None else arrow_table(chunk.frame)
        extra = pa.Table.from_pandas(scores, preserve_index=False)
        table = pa.Table.from_arrays(
            table.columns + extra.columns, names=table.column_names + extra.column_names
        )
        if self.fmt != "parquet":
            self._write_delimited(table)
        elif chunk.table is None and chunk.images is None:
            self.spool = self.spool or Spool(self.path)
            self.spool.add(table)
        else:
            self._write_parquet(table)

    def _write_parquet(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self.handle is None:
            self.handle = pq.ParquetWriter(self.path, table.schema.remove_metadata())
        self.handle.write_table(table.cast(self.handle.schema))

    def _write_delimited(self, table: pa.Table) -> None:
        """Arrow writes the values (text quoted in CSV; TSV literal, as ingest reads it, unless a value
        holds a tab or a line break); the header is written once, quoted only where needed."""
        import pyarrow as pa
        import pyarrow.csv as csv

        sep = "\t" if self.fmt == "tsv" else ","
        if self.handle is None:
            self.handle = open(self.path, "wb")  # noqa: SIM115 (closed in close())
            self.handle.write(header_line(table.column_names, sep))
        if self.fmt == "tsv":
            buffer = pa.BufferOutputStream()
            literal = csv.WriteOptions(include_header=False, delimiter=sep, quoting_style="none")
            try:
                csv.write_csv(table, buffer, write_options=literal)
                self.handle.write(buffer.getvalue())
                return
            except pa.ArrowInvalid:
                pass
        csv.write_csv(table, self.handle, write_options=csv.WriteOptions(include_header=False, delimiter=sep))

    def finish(self) -> None:
        if self.spool is not None:
            self.spool.assemble(self.path)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.spool is not None:
            self.spool.remove()


class Spool:
    """Chunks kept as Arrow IPC files in a hidden folder beside the output, with every type seen."""

    def __init__(self, out: Path) -> None:
        import tempfile

        self.folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".spool", dir=out.parent))
        self.parts: list[Path] = []
        self.types: dict[str, list[pa.DataType]] = {}

    def add(self, table: pa.Table) -> None:
        import pyarrow as pa

        part = self.folder / f"{len(self.parts):06d}.arrow"
        with pa.OSFile(str(part), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        self.parts.append(part)
        for name, column in zip(table.column_names, table.columns, strict=True):
            seen = self.types.setdefault(name, [])
            if column.null_count < len(column) and column.type not in seen:
                seen.append(column.type)  # an all-empty chunk says nothing about the column's type

    def assemble(self, out: Path) -> None:
        """One Parquet file, each chunk cast to the widest type its column took (read back mapped)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(name, widest(types)) for name, types in self.types.items()])
        with pq.ParquetWriter(out, schema) as writer:
            for part in self.parts:
                with pa.memory_map(str(part)) as source:
                    writer.write_table(pa.ipc.open_file(source).read_all().cast(schema))

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def widest(types: list[pa.DataType]) -> pa.DataType:
    """One type for a column: its only one; numbers: int64, or float64 if any has a fraction; else text."""
    import pyarrow as pa

    if len(types) == 1:
        return types[0]
    if types and all(pa.types.is_integer(t) for t in types):
        return pa.int64()
    if types and all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
        return pa.float64()
    return pa.string()


def header_line(names: list[str], sep: str) -> bytes:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, delimiter=sep, lineterminator="\n").writerow(names)
    return buffer.getvalue().encode("utf-8")


@contextmanager
def open_writer(path: Path, fmt: str) -> Iterator[Callable[[Chunk, pd.DataFrame], None]]:
    """A function that appends a chunk and its scores to `path` (csv, tsv or parquet); spools removed."""
    writer = ChunkWriter(path, fmt)
    try:
        yield writer.write
        writer.finish()
    finally:
        writer.close()


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """A pandas chunk as Arrow; a column pandas left with mixed Python types becomes text."""
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        mixed = {
            c: frame[c].map(lambda v: v if _missing(v) else str(v))
            for c in frame.columns
            if frame[c].dtype == object
        }
        return pa.Table.from_pandas(frame.assign(**mixed), preserve_index=False)
