"""ingest: read a CSV, TSV, Parquet file or SQL table, drop duplicate rows, split train/val/test."""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import pandas as pd

from tasks.config import IngestParams, Params
from tasks.errors import ShipyardError, stage_main
from tasks.io import atomic_write, sha256_file, write_json
from tasks.paths import DEFAULT_DATASET, INGEST_REPORT, SPLITS, split_path

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


def sniff_delimiter(path: Path) -> str:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        sample = fh.read(64 * 1024)
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
            sep = "\t" if fmt == "tsv" else sniff_delimiter(Path(source))
            frame = pd.read_csv(source, sep=sep, encoding="utf-8-sig")
    except ShipyardError:
        raise
    except pd.errors.EmptyDataError:
        raise ShipyardError(f"{source}: the file is empty") from None
    except UnicodeDecodeError as err:
        raise ShipyardError(f"{source}: not UTF-8 text (byte {err.start}): re-encode it as UTF-8") from None
    except (pd.errors.ParserError, ValueError, OSError) as err:
        raise ShipyardError(f"{source}: cannot read as {fmt}: {str(err).splitlines()[0]}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    repeated = frame.columns[frame.columns.duplicated()].unique().tolist()
    if repeated:
        raise ShipyardError(f"{source}: duplicate column names {repeated} (after trimming spaces)")
    if frame.empty:
        raise ShipyardError(f"{source}: no data rows (header only?)")
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
    if classes < 2:
        raise ShipyardError(f"{source}: target '{target}' has {classes} class(es); need at least 2")
    counts = {
        "rows_read": len(frame),
        "duplicates_dropped": len(frame) - len(deduped),
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


def run(params: Params) -> dict[str, object]:
    p = params.ingest
    frame = read_source(p)
    frame, counts = clean_rows(frame, p.target, p.source)
    splits = split_dataset(frame, p.target, p)
    report = {
        "source": p.source,
        "source_sha256": source_hash(p.source),
        "target": p.target,
        "columns": list(frame.columns),
        **counts,
        "rows": len(frame),
        "splits": write_splits(splits),
    }
    write_json(INGEST_REPORT, report)
    log.info(
        "ingested %d rows from %s (%d exact duplicates dropped): train %d, val %d, test %d",
        report["rows"],
        p.source,
        counts["duplicates_dropped"],
        *(len(splits[s]) for s in SPLITS),
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
