"""ingest: read the data, infer the task family, drop duplicates, split train/val/test.

Tables come from CSV, TSV, Parquet or SQL; a table with a column of free text is the text family. A folder
of class sub-folders of images (or MNIST-style IDX files) is the image family: its splits are a metadata
table plus the pixels as one uint8 array per split.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import IngestParams, Params
from tasks.errors import ShipyardError, stage_main
from tasks.io import atomic_write, sha256_file, write_json
from tasks.paths import DEFAULT_DATASET, INGEST_REPORT, SPLITS, pixels_path, split_path

log = logging.getLogger("shipyard.ingest")

SQLITE_MAGIC = b"SQLite format 3\x00"
DELIMITERS = ",;\t|"


def write_default_dataset(path: str | Path = DEFAULT_DATASET) -> Path:
    """scikit-learn's bundled breast-cancer data (569 rows, 30 features) as a CSV: the embedded default."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def detect_format(source: str) -> str:
    if "://" in source:
        return "sql"
    path = Path(source)
    if path.is_dir():
        return "parquet"
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    if suffix in {".tsv", ".tab"}:
        return "tsv"
    with open(path, "rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    return "sql" if head == SQLITE_MAGIC else "csv"


def sniff_delimiter(text: str) -> str:
    sample = text[: 64 * 1024]
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def read_sql(source: str, table: str | None, query: str | None) -> pd.DataFrame:
    import sqlalchemy

    url = source if "://" in source else f"sqlite:///{Path(source).resolve()}"
    if not (table or query):
        raise ShipyardError(f"{source}: a SQL source needs ingest.table or ingest.query")
    try:
        engine = sqlalchemy.create_engine(url)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as err:
        raise ShipyardError(f"{source}: cannot open this database URL: {err}") from None
    try:
        with engine.connect() as conn:
            sql = query or f"SELECT * FROM {_quote(table)}"
            return pd.read_sql(sqlalchemy.text(sql), conn)
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).splitlines()[0]
        raise ShipyardError(f"{source}: SQL read failed: {reason}") from None
    finally:
        engine.dispose()


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def read_delimited_file(path: Path, fmt: str, invalid_bytes: str) -> pd.DataFrame:
    """CSV/TSV as UTF-8. A few bytes that are not UTF-8 are repaired (counted in frame.attrs) unless
    ingest.invalid_bytes is reject; a file with many (over 1% of its bytes) or with NUL bytes is not text."""
    from tasks.texts import decode_bytes, read_delimited

    raw = path.read_bytes()
    text, invalid = decode_bytes(raw)
    if invalid and (invalid_bytes == "reject" or invalid > max(10, len(raw) // 100) or b"\x00" in raw[:4096]):
        raise ShipyardError(
            f"{path}: not UTF-8 text ({invalid} invalid byte sequence(s)): re-encode it as UTF-8"
            + (", or set ingest.invalid_bytes: repair" if invalid_bytes == "reject" else "")
        )
    if not text.strip():
        raise pd.errors.EmptyDataError
    try:
        frame = read_delimited(text, "\t" if fmt == "tsv" else sniff_delimiter(text))
    except ShipyardError as err:
        raise ShipyardError(f"{path}: {err}") from None
    frame.attrs["invalid_bytes"] = invalid
    return frame


def read_source(params: IngestParams) -> pd.DataFrame:
    """Read the raw table; any failure is a ShipyardError naming the source."""
    source = params.source
    if "://" not in source and not Path(source).exists():
        raise ShipyardError(f"{source}: file not found")
    fmt = detect_format(source) if params.format == "auto" else params.format
    try:
        if fmt == "sql":
            frame = read_sql(source, params.table, params.query)
        elif fmt == "parquet":
            frame = pd.read_parquet(source)
        else:
            frame = read_delimited_file(Path(source), fmt, params.invalid_bytes)
    except pd.errors.EmptyDataError:
        raise ShipyardError(f"{source}: the file is empty") from None
    except UnicodeDecodeError as err:
        raise ShipyardError(f"{source}: not UTF-8 text (byte {err.start}): re-encode it as UTF-8") from None
    except (pd.errors.ParserError, ValueError, OSError) as err:
        raise ShipyardError(f"{source}: cannot read as {fmt}: {str(err).splitlines()[0]}") from None
    except ShipyardError:
        raise
    frame = clean_column_names(frame, source)
    if fmt in ("csv", "tsv") and len(frame.columns) == 1:
        raise ShipyardError(
            f"{source}: only one column found ({frame.columns[0][:60]!r}); a dataset needs features and "
            "a label: if the file has more columns, its delimiter is not one of , ; tab |"
        )
    if frame.empty:
        raise ShipyardError(f"{source}: no data rows (header only?)")
    frame.attrs["format"] = fmt
    return frame


def clean_column_names(frame: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """Column names as text without surrounding spaces; names that collide then are an error."""
    frame.columns = [str(c).strip() for c in frame.columns]
    repeated = frame.columns[frame.columns.duplicated()].unique().tolist()
    if repeated:
        raise ShipyardError(f"{source}: duplicate column names {repeated} (after trimming spaces)")
    return frame


def clean_rows(frame: pd.DataFrame, target: str, source: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop exact duplicate rows and rows without a label; refuse data with fewer than two classes."""
    if target not in frame.columns:
        columns = ", ".join(list(frame.columns)[:12])
        raise ShipyardError(f"{source}: target column '{target}' not found (columns: {columns})")
    deduped = frame.drop_duplicates(ignore_index=True)
    labelled = deduped[deduped[target].notna()].reset_index(drop=True)
    labels = labelled[target]
    if pd.api.types.is_float_dtype(labels) and (labels % 1 == 0).all():
        labelled[target] = labels.astype("int64")  # ints read as floats because of an empty label cell
    classes = labelled[target].nunique()
    dropped = len(frame) - len(deduped)
    if classes < 2:
        note = (
            f" ({len(deduped)} distinct of {len(frame)} rows: the rest are exact duplicates)"
            if dropped
            else ""
        )
        raise ShipyardError(f"{source}: target '{target}' has {classes} class(es); need at least 2{note}")
    counts = {
        "rows_read": len(frame),
        "duplicates_dropped": dropped,
        "unlabelled_dropped": len(deduped) - len(labelled),
    }
    return labelled, counts


def split_dataset(frame: pd.DataFrame, target: str, params: IngestParams) -> dict[str, pd.DataFrame]:
    """Deterministic, seeded, stratified train/val/test split."""
    from sklearn.model_selection import train_test_split

    smallest = frame[target].value_counts().min()
    if smallest < 3:
        rare = frame[target].value_counts().idxmin()
        raise ShipyardError(
            f"target '{target}': class {rare!r} has {smallest} row(s); a stratified split needs at least 3"
        )
    holdout = params.val_fraction + params.test_fraction
    try:
        train, rest = train_test_split(
            frame, test_size=holdout, stratify=frame[target], random_state=params.seed
        )
        val, test = train_test_split(
            rest, test_size=params.test_fraction / holdout, stratify=rest[target], random_state=params.seed
        )
    except ValueError as err:
        counts = frame[target].value_counts().to_dict()
        raise ShipyardError(
            f"target '{target}': cannot split {len(frame)} rows into stratified train/val/test "
            f"(class counts {counts}): {err}; add rows or change ingest.val_fraction/test_fraction"
        ) from None
    return {"train": train, "val": val, "test": test}


def write_splits(splits: dict[str, pd.DataFrame]) -> dict[str, dict[str, object]]:
    written = {}
    for name in SPLITS:
        part = splits[name].reset_index(drop=True)
        path = atomic_write(split_path(name), lambda tmp, part=part: part.to_parquet(tmp, index=False))
        written[name] = {"path": str(path), "rows": len(part), "sha256": sha256_file(path)}
    return written


def source_hash(source: str) -> str | None:
    path = Path(source)
    return sha256_file(path) if "://" not in source and path.is_file() else None


def detect_task(params: Params, frame: pd.DataFrame) -> tuple[str, str | None]:
    """(task, text column) of a table: from params when set, else text when a column holds free text."""
    from tasks.texts import check_text_column, find_text_column

    p = params.ingest
    if params.task == "image":
        raise ShipyardError(f"{p.source}: task is 'image' but this is a table, not an image folder")
    column = p.text_column
    if column is None and params.task in ("auto", "text"):
        column = find_text_column(frame, p.target)
        if column is None and params.task == "text":
            raise ShipyardError(f"{p.source}: no column of free text found; name it with --text-column")
    if column is None or params.task == "tabular":
        return "tabular", None
    check_text_column(frame, column, p.source)
    return "text", column


def read_data(params: Params) -> tuple[pd.DataFrame | None, bool]:
    """The table, or None for an image source (read later by the image path)."""
    from tasks.images import is_image_source

    p = params.ingest
    is_images = "://" not in p.source and Path(p.source).exists() and is_image_source(p.source)
    if params.task == "image" and not is_images:
        raise ShipyardError(f"{p.source}: task is 'image' but this is not an image folder or IDX file")
    return (None if is_images else read_source(p)), is_images


def prepare_text(frame: pd.DataFrame, column: str, target: str, source: str) -> tuple[pd.DataFrame, dict]:
    """Keep the text and the label; normalise the texts; drop repeated texts before splitting."""
    from tasks.texts import normalise_texts

    if target not in frame.columns:
        raise ShipyardError(f"{source}: target column '{target}' not found (columns: {list(frame.columns)})")
    table = frame[[column, target]].copy()
    table[column] = normalise_texts(table[column])
    labelled = table[table[target].notna()]
    # Missing texts stay, however many: validation reports them (they are not duplicates of each other).
    present = labelled[column].notna()
    conflicting = present & (labelled.groupby(column)[target].transform("nunique") > 1)
    repeated = present & labelled[column].duplicated()
    kept = labelled[~conflicting & ~repeated].reset_index(drop=True)
    counts = {
        "rows_read": len(frame),
        "unlabelled_dropped": len(table) - len(labelled),
        "conflicting_labels_dropped": int(conflicting.sum()),
        "duplicate_texts_dropped": int((repeated & ~conflicting).sum()),
        "invalid_bytes_repaired": int(frame.attrs.get("invalid_bytes", 0)),
    }
    return kept, counts


def ingest_table(params: Params, frame: pd.DataFrame, task: str, column: str | None) -> dict[str, Any]:
    p = params.ingest
    invalid = int(frame.attrs.get("invalid_bytes", 0))
    if task == "tabular" and invalid:
        raise ShipyardError(
            f"{p.source}: not UTF-8 text ({invalid} invalid byte sequence(s)): re-encode it as UTF-8"
        )
    extra: dict[str, Any] = {}
    if task == "text":
        frame, extra = prepare_text(frame, column, p.target, p.source)
        if invalid:
            log.warning("%s: %d invalid UTF-8 byte sequence(s) replaced with U+FFFD", p.source, invalid)
    frame, counts = clean_rows(frame, p.target, p.source)
    splits = split_dataset(frame, p.target, p)
    written = write_splits(splits)
    return {
        **({"text_column": column} if column else {}),
        "columns": list(frame.columns),
        **counts,
        **extra,  # text counts what it dropped before clean_rows saw the rows
        "rows": len(frame),
        "splits": written,
    }


def ingest_images(params: Params) -> dict[str, Any]:
    from tasks.images import drop_duplicate_images, read_images, subset

    p = params.ingest
    data = read_images(p.source, p.target, size=p.image_size, on_bad=p.bad_files)
    data, counts = drop_duplicate_images(data, p.target)
    splits = split_dataset(data.meta, p.target, p)
    written = write_splits(splits)
    for name in SPLITS:
        pixels = subset(data, splits[name].index.to_numpy()).pixels
        atomic_write(pixels_path(name), lambda tmp, a=pixels: _save_array(tmp, a))
        written[name]["pixels_sha256"] = sha256_file(pixels_path(name))
    _, height, width, channels = data.pixels.shape
    return {
        "columns": list(data.meta.columns),
        "image": {"height": height, "width": width, "channels": channels},
        "rows_read": len(data.meta) + counts["duplicates_dropped"] + counts["conflicting_labels"],
        **counts,
        "resized": data.resized,
        "skipped_files": data.skipped,
        "rows": len(data.meta),
        "splits": written,
    }


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)


def run(params: Params) -> dict[str, Any]:
    p = params.ingest
    frame, is_images = read_data(params)
    task, column = ("image", None) if is_images else detect_task(params, frame)
    kind = "image files" if frame is None else frame.attrs.get("format", "table")
    log.info(
        "%s: read as %s; task: %s%s", p.source, kind, task, f", text column '{column}'" if column else ""
    )
    details = ingest_images(params) if task == "image" else ingest_table(params, frame, task, column)
    if task != "image":
        for name in SPLITS:
            pixels_path(name).unlink(missing_ok=True)
    report = {"task": task, "source": p.source, "source_sha256": source_hash(p.source), "target": p.target}
    report.update(details)
    write_json(INGEST_REPORT, report)
    split_rows = [report["splits"][s]["rows"] for s in SPLITS]
    dropped = report.get("duplicates_dropped", 0) + report.get("duplicate_texts_dropped", 0)
    log.info(
        "ingested %d rows from %s (%d duplicates dropped): train %d, val %d, test %d",
        report["rows"],
        p.source,
        dropped,
        *split_rows,
    )
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write-default", action="store_true", help="write the embedded default CSV")
    if parser.parse_args(argv).write_default:
        print(f"wrote {write_default_dataset()}")
        return
    stage_main(run)


if __name__ == "__main__":
    main()
