"""ingest: every source format, clear errors naming the file or column, dedup, and the split contract."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import IngestParams
from tasks.errors import ShipyardError
from tasks.ingest import clean_rows, read_source, run, split_dataset, write_default_dataset
from tasks.paths import INGEST_REPORT, SPLITS, split_path

TARGET = "label"


def small_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [1.5, 2.0, 3.25, 4.0, 5.0, 6.5],
            "n": [1, 2, 3, 4, 5, 6],
            "colour": ["red", "blue", "red", "green", "blue", "red"],
            TARGET: ["yes", "no", "yes", "no", "yes", "no"],
        }
    )


def write_csv(path: Path, frame: pd.DataFrame, sep: str = ",", encoding: str = "utf-8") -> None:
    path.write_bytes(frame.to_csv(index=False, sep=sep).encode(encoding))


def sqlite_file(path: Path, frame: pd.DataFrame, table: str = "rows") -> Path:
    with sqlite3.connect(path) as conn:
        frame.to_sql(table, conn, index=False)
    conn.close()
    return path


def read(source: Path | str, **kwargs) -> pd.DataFrame:
    return read_source(IngestParams(source=str(source), target=TARGET, **kwargs))


def assert_same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False
    )


# ---- read_source: formats -----------------------------------------------------------------------------


WRITERS: dict[str, tuple[str, Callable[[Path, pd.DataFrame], None]]] = {
    "csv": ("data.csv", lambda p, f: write_csv(p, f)),
    "semicolon csv": ("data.csv", lambda p, f: write_csv(p, f, sep=";")),
    "pipe csv": ("data.csv", lambda p, f: write_csv(p, f, sep="|")),
    "tab-separated .txt (sniffed)": ("data.txt", lambda p, f: write_csv(p, f, sep="\t")),
    "tsv": ("data.tsv", lambda p, f: write_csv(p, f, sep="\t")),
    "BOM csv": ("data.csv", lambda p, f: write_csv(p, f, encoding="utf-8-sig")),
    "BOM semicolon csv": ("data.csv", lambda p, f: write_csv(p, f, sep=";", encoding="utf-8-sig")),
    "parquet": ("data.parquet", lambda p, f: f.to_parquet(p, index=False)),
    "sqlite file (table)": ("data.db", lambda p, f: sqlite_file(p, f)),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_read_source_formats(tmp_path: Path, kind: str) -> None:
    name, write = WRITERS[kind]
    path = tmp_path / name
    write(path, small_frame())
    got = read(path, table="rows")
    assert list(got.columns) == ["x", "n", "colour", TARGET]  # no BOM or stray whitespace in names
    assert_same(got, small_frame())


def test_read_parquet_folder(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    frame = small_frame()
    frame.iloc[:3].to_parquet(folder / "part-0.parquet", index=False)
    frame.iloc[3:].to_parquet(folder / "part-1.parquet", index=False)
    got = read(folder)
    assert_same(got.sort_values("n"), frame)


def test_read_sqlite_query(tmp_path: Path) -> None:
    path = sqlite_file(tmp_path / "data.sqlite", small_frame())
    got = read(path, query=f"SELECT x, colour, {TARGET} FROM rows WHERE n > 2 ORDER BY n")
    assert_same(got, small_frame().query("n > 2")[["x", "colour", TARGET]])


def test_read_sqlalchemy_url(tmp_path: Path) -> None:
    path = sqlite_file(tmp_path / "data.db", small_frame(), table="my rows")
    got = read(f"sqlite:///{path}", table="my rows")  # a table name that needs quoting
    assert_same(got, small_frame())


def test_explicit_format_overrides_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.dat"
    write_csv(path, small_frame(), sep="\t")
    assert_same(read(path, format="tsv"), small_frame())


def test_column_names_are_stripped(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(" x , colour ,label\n1,red,a\n2,blue,b\n", encoding="utf-8")
    assert list(read(path).columns) == ["x", "colour", "label"]


# ---- read_source: errors ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(ShipyardError, match=rf"^{re.escape(str(path))}: file not found"):
        read(path)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("blank.csv", b"\n\n", "the file is empty"),
        ("header.csv", b"x,colour,label\n", r"no data rows \(header only\?\)"),
        ("header.tsv", b"x\tcolour\tlabel\n", r"no data rows"),
        ("garbage.parquet", b"not parquet at all", "cannot read as parquet"),
        (
            "short.csv",
            b"x,colour,label\n1,red,a\n2,blue\n3,red,b\n",
            r".*line 3 has 2 field\(s\), the header has 3",
        ),
        ("long.csv", b"x,colour,label\n1,red,a\n2,blue,b,9\n", r".*Expected 3 fields in line 3, saw 4"),
        ("spaces.csv", b"x colour label\n1 red a\n2 blue b\n", r"only one column found \('x colour label'\)"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ShipyardError, match=rf"^{re.escape(str(path))}: {expected}"):
        read(path)


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffx,label\n1,a\n2,b\n".encode())
    assert list(read(path).columns) == ["x", "label"]


LATIN1 = "x,label\n1,café\n2,naïve\n".encode("latin-1")


def test_non_utf8_is_rejected_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(LATIN1)
    expected = r"not UTF-8 text \(2 invalid byte sequence\(s\)\): re-encode it as UTF-8"
    with pytest.raises(ShipyardError, match=rf"^{re.escape(str(path))}: {expected}"):
        read(path, invalid_bytes="reject")


def test_non_utf8_is_repaired_and_counted_by_default(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(LATIN1)
    frame = read(path)
    assert frame.attrs["invalid_bytes"] == 2
    assert frame["label"].tolist() == ["caf\ufffd", "na\ufffdve"]


def test_non_utf8_tabular_data_is_an_error_naming_the_file(project: Path, make_params) -> None:
    rows = "".join(f"{i},{'a' if i % 2 else 'b'}\n" for i in range(30))
    Path("latin1.csv").write_bytes(("x,label\n" + rows).encode() + "9,caf\xe9\n".encode("latin-1"))
    expected = r"not UTF-8 text \(1 invalid byte sequence\(s\)\): re-encode it as UTF-8"
    with pytest.raises(ShipyardError, match=rf"^latin1.csv: {expected}"):
        run(make_params(ingest={"source": "latin1.csv"}))
    assert not Path("data").exists()


def test_non_utf8_after_the_sniffed_sample(tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    rows = "".join(f"{i},a\n" for i in range(20_000))
    path.write_bytes(("x,label\n" + rows).encode() + "9,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ShipyardError, match=rf"^{re.escape(str(path))}: not UTF-8 text \(1 invalid"):
        read(path, invalid_bytes="reject")
    assert read(path).attrs["invalid_bytes"] == 1  # counted even past the delimiter sniffer's sample


def test_sql_source_needs_table_or_query(tmp_path: Path) -> None:
    path = sqlite_file(tmp_path / "data.db", small_frame())
    with pytest.raises(
        ShipyardError, match=rf"^{re.escape(str(path))}: a SQL source needs ingest.table or ingest.query"
    ):
        read(path)
    with pytest.raises(ShipyardError, match="needs ingest.table or ingest.query"):
        read(f"sqlite:///{path}")


def test_sql_missing_table_names_the_source(tmp_path: Path) -> None:
    path = sqlite_file(tmp_path / "data.db", small_frame())
    with pytest.raises(ShipyardError, match=rf"^{re.escape(str(path))}: .*no such table: absent"):
        read(path, table="absent")


@pytest.mark.parametrize("url", ["nosuchdialect://host/db", "sqlite+nosuchdriver:///rows.db"])
def test_bad_sql_url_is_a_shipyard_error(url: str) -> None:
    with pytest.raises(ShipyardError, match=rf"^{re.escape(url)}: "):
        read(url, table="rows")


def test_columns_that_collide_after_stripping_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a, a ,label\n1,2,x\n3,4,y\n", encoding="utf-8")
    with pytest.raises(ShipyardError, match="'a'"):
        read(path)


# ---- clean_rows ---------------------------------------------------------------------------------------


def test_missing_target_column_is_named() -> None:
    with pytest.raises(ShipyardError, match=r"^data.csv: target column 'outcome' not found \(columns: x, n"):
        clean_rows(small_frame(), "outcome", "data.csv")


@pytest.mark.parametrize(
    "labels",
    [["a"] * 6, ["a", "a", None, "a", None, "a"], [None] * 6],
)
def test_fewer_than_two_classes_is_refused(labels: list) -> None:
    frame = small_frame().assign(**{TARGET: labels})
    classes = len({v for v in labels if v is not None})
    with pytest.raises(ShipyardError, match=rf"target 'label' has {classes} class\(es\); need at least 2"):
        clean_rows(frame, TARGET, "data.csv")


def test_duplicates_and_unlabelled_rows_are_dropped_and_counted() -> None:
    frame = small_frame()
    dirty = pd.concat([frame, frame.iloc[[0, 0, 3]]], ignore_index=True)
    dirty.loc[len(dirty)] = [9.0, 9, "red", None]
    dirty.loc[len(dirty)] = [1.5, 1, "red", "no"]  # same features as row 0, other label: not a duplicate
    clean, counts = clean_rows(dirty, TARGET, "data.csv")
    assert counts == {"rows_read": 11, "duplicates_dropped": 3, "unlabelled_dropped": 1}
    assert len(clean) == 7 and clean[TARGET].notna().all()
    assert list(clean.index) == list(range(7))
    assert not clean.duplicated().any()


def test_integer_labels_stay_integers_after_unlabelled_rows_are_dropped(tmp_path: Path) -> None:
    from tasks.features import label_values

    path = tmp_path / "data.csv"
    path.write_text("x,label\n1,0\n2,1\n3,\n4,1\n5,0\n", encoding="utf-8")
    clean, _ = clean_rows(read(path), TARGET, str(path))
    labels = label_values(clean[TARGET])
    assert labels == [0, 1] and all(type(v) is int for v in labels)


# ---- split_dataset ------------------------------------------------------------------------------------


def numbered(make_frame, n: int = 120, labels=("a", "b", "c")) -> pd.DataFrame:
    frame = make_frame(n=n, labels=labels)
    frame.insert(0, "row_id", range(n))
    return frame


def test_split_is_disjoint_and_covers_every_row(make_frame) -> None:
    frame = numbered(make_frame)
    splits = split_dataset(frame, TARGET, IngestParams(target=TARGET))
    ids = [set(splits[name]["row_id"]) for name in SPLITS]
    assert sum(len(s) for s in ids) == len(frame)
    assert set().union(*ids) == set(frame["row_id"])
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (84, 18, 18)


def test_split_is_deterministic_for_a_seed(make_frame) -> None:
    frame = numbered(make_frame)
    params = IngestParams(target=TARGET, seed=11)
    first = split_dataset(frame, TARGET, params)
    again = split_dataset(frame.copy(), TARGET, params)
    other = split_dataset(frame, TARGET, IngestParams(target=TARGET, seed=12))
    for name in SPLITS:
        assert list(first[name]["row_id"]) == list(again[name]["row_id"])
    assert list(first["train"]["row_id"]) != list(other["train"]["row_id"])


def test_split_is_stratified(make_frame) -> None:
    frame = make_frame(n=200, labels=("a", "b"))
    frame = pd.concat([frame, make_frame(n=40, labels=("c",), seed=5)], ignore_index=True)  # 100/100/40
    shares = frame[TARGET].value_counts(normalize=True)
    splits = split_dataset(frame, TARGET, IngestParams(target=TARGET, val_fraction=0.2, test_fraction=0.2))
    for name, part in splits.items():
        counts = part[TARGET].value_counts()
        for label, share in shares.items():
            assert abs(counts.get(label, 0) - share * len(part)) <= 1, (name, label)


def test_split_needs_three_rows_per_class(make_frame) -> None:
    frame = make_frame(n=40, labels=("a", "b")).iloc[:22]
    frame = pd.concat([frame, pd.DataFrame({"x1": [0.0] * 2, "x2": [0.0] * 2, "colour": "red", TARGET: "z"})])
    with pytest.raises(ShipyardError, match=r"class 'z' has 2 row\(s\); a stratified split needs at least 3"):
        split_dataset(frame, TARGET, IngestParams(target=TARGET))


def test_rare_class_that_cannot_be_split_is_a_shipyard_error(make_frame) -> None:
    frame = make_frame(n=100, labels=("a",))
    frame.loc[frame.index[:3], TARGET] = "b"
    with pytest.raises(ShipyardError, match="'b'"):
        split_dataset(frame, TARGET, IngestParams(target=TARGET))


# ---- run ----------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_run_writes_splits_and_report(project: Path, make_frame, make_params) -> None:
    frame = make_frame(n=60)
    frame = pd.concat([frame, frame.iloc[:4]], ignore_index=True)  # 4 exact duplicates
    frame.loc[len(frame)] = [0.0, 0.0, "red", None]  # 1 unlabelled row
    frame.to_csv("raw.csv", index=False)
    report = run(make_params(ingest={"source": "raw.csv"}))

    on_disk = json.loads(INGEST_REPORT.read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["source"] == "raw.csv" and on_disk["source_sha256"] == sha256(Path("raw.csv"))
    assert (on_disk["rows_read"], on_disk["duplicates_dropped"], on_disk["unlabelled_dropped"]) == (65, 4, 1)
    assert on_disk["rows"] == 60 and on_disk["target"] == TARGET
    assert on_disk["task"] == "tabular" and "text_column" not in on_disk and "image" not in on_disk
    assert on_disk["columns"] == ["x1", "x2", "colour", TARGET]
    assert sum(on_disk["splits"][name]["rows"] for name in SPLITS) == 60
    parts = []
    for name in SPLITS:
        entry = on_disk["splits"][name]
        assert entry["path"] == str(split_path(name))
        assert entry["sha256"] == sha256(split_path(name))
        part = pd.read_parquet(split_path(name))
        assert len(part) == entry["rows"] and list(part.columns) == on_disk["columns"]
        parts.append(part)
    together = pd.concat(parts).sort_values(["x1", "x2"]).reset_index(drop=True)
    expected = (
        frame.drop_duplicates().dropna(subset=[TARGET]).sort_values(["x1", "x2"]).reset_index(drop=True)
    )
    assert_same(together, expected)
    assert sorted(p.name for p in Path("data/splits").iterdir()) == [
        "test.parquet",
        "train.parquet",
        "val.parquet",
    ]


def test_run_is_reproducible(project: Path, make_frame, make_params) -> None:
    make_frame(n=60).to_csv("raw.csv", index=False)
    first = run(make_params(ingest={"source": "raw.csv"}))
    again = run(make_params(ingest={"source": "raw.csv"}))
    assert first["splits"] == again["splits"]


def test_run_fails_on_missing_target_without_writing(project: Path, make_frame, make_params) -> None:
    make_frame(n=30).to_csv("raw.csv", index=False)
    with pytest.raises(ShipyardError, match="target column 'outcome' not found"):
        run(make_params(ingest={"source": "raw.csv", "target": "outcome"}))
    assert not Path("data").exists()


@pytest.mark.parametrize(
    "labels",
    [("benign", "malignant"), (False, True), (0, 1), (3, 7, 11)],
    ids=["str", "bool", "int", "int-3-classes"],
)
def test_label_types_survive_ingest(project: Path, make_frame, make_params, labels: tuple) -> None:
    from tasks.features import label_values

    make_frame(n=45, labels=labels).to_parquet("raw.parquet", index=False)
    run(make_params(ingest={"source": "raw.parquet"}))
    train = pd.read_parquet(split_path("train"))
    values = label_values(train[TARGET])
    assert values == sorted(labels)
    assert all(type(v) is type(labels[0]) for v in values)


def test_label_types_survive_a_csv(project: Path, make_frame, make_params) -> None:
    from tasks.features import label_values

    make_frame(n=45, labels=(False, True)).to_csv("raw.csv", index=False)
    run(make_params(ingest={"source": "raw.csv"}))
    assert label_values(pd.read_parquet(split_path("train"))[TARGET]) == [False, True]


def test_odd_column_names(project: Path, make_frame, make_params) -> None:
    frame = make_frame(n=45).rename(columns={"x1": "petal length (cm)", "x2": "größe μm", "colour": "1"})
    frame["2"] = range(45)
    frame = frame.rename(columns={TARGET: "the label"})
    path = Path("odd.csv")
    path.write_text(frame.to_csv(index=False).replace("the label", " the label "), encoding="utf-8")
    report = run(make_params(ingest={"source": "odd.csv", "target": "the label"}))
    expected = ["petal length (cm)", "größe μm", "1", "the label", "2"]
    assert report["columns"] == expected
    assert list(pd.read_parquet(split_path("train")).columns) == expected
    assert sum(report["splits"][name]["rows"] for name in SPLITS) == 45


def test_write_default_dataset(project: Path) -> None:
    path = write_default_dataset(Path("data/raw/default.csv"))
    frame = pd.read_csv(path)
    assert frame.shape == (569, 31) and "target" in frame.columns
    assert set(frame["target"]) == {0, 1}
    assert [p.name for p in path.parent.iterdir()] == ["default.csv"]


def test_a_table_of_one_repeated_row_says_so() -> None:
    frame = pd.DataFrame({"x": [1] * 20, "label": ["a"] * 20})
    with pytest.raises(
        ShipyardError, match=r"1 class\(es\); need at least 2 \(1 distinct of 20 rows: the rest"
    ):
        clean_rows(frame, "label", "data.csv")


def test_a_field_longer_than_the_csv_module_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("message,label\n" + "word " * 40_000 + ",spam\nhello,ham\n", encoding="utf-8")
    assert len(read(path)["message"][0]) == 200_000
