"""Drift and train/serve skew: a profile of the training data, and new data measured against it.

Great Expectations checks rules row by row; whether a batch still *looks like* the training data is ours.
`profile_split` summarises the training split in a small JSON file that export publishes with the model
(quantile bins and a quantile sketch per numeric column, category shares per categorical column, text
lengths and vocabulary, image sizes and pixel statistics), so drift is measured later without the
training rows. `compare` scores new data against it: PSI and two-sample KS for numbers, Jensen-Shannon
distance and the new-category rate for categories, the out-of-vocabulary rate for texts.

Only numpy and pandas at import (scipy inside `compare`): export runs this on machines without scipy.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.errors import ShipyardError
from tasks.features import NUMERIC_SHARE, category_key, column_kind
from tasks.io import read_json

if TYPE_CHECKING:
    from tasks.config import DriftParams, Params

PROFILE_FORMAT = 1
DRIFT_REPORT = Path("reports/drift.json")
SKETCH_POINTS = 201  # quantiles kept per numeric column: KS from the sketch is within 1/200 of the exact D
SENSITIVE_SKETCH = (0.01, 0.99)  # a sensitive column's sketch leaves out its extreme values
TOP_CATEGORIES = 1000
VOCABULARY_SIZE = 20_000
EPSILON = 1e-4  # PSI: the share an empty bin counts as
HASH_BYTES = 8  # blake2b digest: 16 hex characters
UNIQUE_MIN_ROWS = 20  # a categorical column all of whose values differ (an id) is not compared
IMAGE_SKIPPED = ("path", "sha256")  # per-file identities, not distributions
PIXEL_COLUMNS = ("pixel_mean", "pixel_std")
WORD_PATTERN = r"\w+"
SEED = 0

METRICS = ("psi", "ks", "js", "new_category_rate", "oov_increase")
METRIC_NAMES = {
    "psi": "PSI",
    "ks": "KS",
    "js": "JS",
    "new_category_rate": "new-category rate",
    "oov_increase": "OOV increase",
}
LEVELS = ("ok", "warning", "critical")


# ---- the profile ----------------------------------------------------------------------------------------


def profile_split(
    frame: pd.DataFrame,
    task: str,
    target: str,
    pixels: np.ndarray | None = None,
    text_column: str | None = None,
    sensitive: tuple[str, ...] | list[str] = (),
    bins: int = 10,
) -> dict[str, Any]:
    """The reference profile of a training split: plain JSON, no raw values of sensitive columns.

    Numeric columns: `bins` quantile bins (plus a missing bin) for PSI and a quantile sketch for KS.
    Categorical columns and the label: category shares (top TOP_CATEGORIES, the rest as "other"); a
    sensitive column's categories are kept as blake2b hashes. Text: length in words, and the vocabulary.
    Images: width, height and mode as categories, each image's pixel mean and std as numbers.
    """
    if frame.empty:
        raise ShipyardError("drift profile: the training split has no rows")
    hidden = set(sensitive)
    columns: dict[str, Any] = {}
    skipped = [c for c in frame.columns if task == "image" and c in IMAGE_SKIPPED]
    for name in frame.columns:
        if name in skipped:
            continue
        series, secret = frame[name], name in hidden
        if name == text_column:
            columns[name] = text_profile(series, bins, secret)
        elif name == target or task == "image" or kind_of(series) == "categorical":
            columns[name] = categorical_profile(series, secret, allow_unique=name != target)
        else:
            columns[name] = numeric_profile(to_floats(series), bins, secret)
    profile: dict[str, Any] = {
        "format": PROFILE_FORMAT,
        "task": task,
        "target": target,
        "text_column": text_column,
        "rows": len(frame),
        "bins": bins,
        "sensitive_columns": sorted(hidden & set(frame.columns)),
        "skipped_columns": skipped,
    }
    if task == "image":
        if pixels is None:
            raise ShipyardError("drift profile: an image split needs its pixels")
        _, height, width, channels = pixels.shape
        profile["image"] = {"height": height, "width": width, "channels": channels}
        for name, values in zip(PIXEL_COLUMNS, pixel_stats(pixels), strict=True):
            columns[name] = {**numeric_profile(values, bins), "derived": "pixels"}
    profile["columns"] = columns
    return profile


def kind_of(series: pd.Series) -> str:
    """tasks.features.column_kind (the kind training gives the column), parsing each distinct text once."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return column_kind(series)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    if len(uniques) == 0:
        return column_kind(series)
    texts = pd.Series(uniques, dtype=object).astype(str).str.strip()
    parsed = pd.to_numeric(texts, errors="coerce").notna().to_numpy()
    return "numeric" if parsed[codes[codes >= 0]].mean() >= NUMERIC_SHARE else "categorical"


def to_floats(series: pd.Series) -> np.ndarray:
    """float64 values; anything that is not a number becomes NaN (it counts as missing)."""
    if series.dtype == np.float64:
        return series.to_numpy()
    if pd.api.types.is_bool_dtype(series.dtype):
        series = series.astype("float64")
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def numeric_profile(values: np.ndarray, bins: int, sensitive: bool = False) -> dict[str, Any]:
    """Quantile bin edges with each bin's share (last: missing, i.e. NaN, ±Inf or not a number) and a
    quantile sketch. A sensitive column's sketch leaves out the extremes (its min and max are values)."""
    finite = np.sort(values[np.isfinite(values)])
    probs = (
        np.linspace(*SENSITIVE_SKETCH, SKETCH_POINTS - 4) if sensitive else np.linspace(0, 1, SKETCH_POINTS)
    )
    edges = np.unique(quantiles(finite, np.arange(1, bins) / bins)) if finite.size else np.empty(0)
    return {
        "kind": "numeric",
        "rows": len(values),
        "count": int(finite.size),
        "null_share": 1 - finite.size / len(values),
        "edges": edges.tolist(),
        "shares": bin_shares(finite, edges, len(values)).tolist(),
        "probs": probs.tolist() if finite.size else [],
        "sketch": quantiles(finite, probs).tolist() if finite.size else [],
    }


def quantiles(ordered: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Quantiles of sorted values by linear interpolation (numpy's default), without sorting again."""
    position = probs * (len(ordered) - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def bin_shares(ordered: np.ndarray, edges: np.ndarray, rows: int) -> np.ndarray:
    """Share of rows per bin [-inf, e1), [e1, e2), ..., [ek, inf), then the share of missing rows."""
    below = np.searchsorted(ordered, edges, side="left")
    counts = np.diff(np.concatenate([[0], below, [len(ordered)]]))
    return np.append(counts, rows - len(ordered)) / rows


def categorical_profile(series: pd.Series, sensitive: bool = False, allow_unique: bool = True) -> dict:
    """Category shares of all rows (top TOP_CATEGORIES; "other" for the rest, null_share for missing)."""
    counts, missing = category_counts(series, sensitive)
    rows, present = len(series), len(series) - missing
    base = {"rows": rows, "null_share": missing / rows, "hashed": sensitive}
    if allow_unique and present >= UNIQUE_MIN_ROWS and len(counts) == present:
        return {"kind": "unique", **base}  # an identifier: every new row is a new category by design
    top = counts.nlargest(TOP_CATEGORIES, keep="first")
    return {
        "kind": "categorical",
        **base,
        "categories": len(counts),
        "frequencies": {key: int(n) / rows for key, n in top.items()},
        "other": int(present - top.sum()) / rows,
    }


def category_counts(series: pd.Series, hashed: bool) -> tuple[pd.Series, int]:
    """Rows per category key (tasks.features.category_key, so 1 and 1.0 agree), hashed when asked;
    and the number of missing rows. Keys are computed once per distinct value, not per row."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    keys = [category_key(value) for value in uniques]
    if hashed:
        keys = [hash_value(key) for key in keys]
    per_key = pd.Series(counts, index=pd.Index(keys, dtype=object)).groupby(level=0, sort=False).sum()
    return per_key, int((codes < 0).sum())


def hash_value(value: str | None) -> str:
    """A sensitive value as it appears in a profile: a short blake2b digest (unsalted: new data must
    hash to the same key; a dictionary attack on a low-cardinality column remains possible)."""
    return hashlib.blake2b(str(value).encode("utf-8"), digest_size=HASH_BYTES).hexdigest()


def text_profile(series: pd.Series, bins: int, sensitive: bool = False) -> dict[str, Any]:
    """Length in words (numeric profile), the vocabulary (lower-cased words, the VOCABULARY_SIZE most
    frequent) and the reference out-of-vocabulary rate.

    The reference OOV rate is measured on a random half of the texts against the vocabulary of the other
    half: the rate a fresh sample of the same data shows (new data is checked against the vocabulary of
    all training texts, so this reference leans slightly high, which keeps false alarms away)."""
    tokens = words(series)
    order = np.random.default_rng(SEED).permutation(len(tokens))
    half = len(tokens) // 2
    vocabulary = top_words(tokens, VOCABULARY_SIZE)
    reference = (
        oov_rate(tokens.iloc[order[half:]], set(top_words(tokens.iloc[order[:half]], VOCABULARY_SIZE)))
        if half
        else 0.0
    )
    return {
        "kind": "text",
        "rows": len(series),
        "null_share": float(series.isna().mean()),
        "hashed": sensitive,
        "length_unit": "words",
        "length": numeric_profile(tokens.str.len().to_numpy(dtype=np.float64), bins),
        "vocabulary": [hash_value(w) for w in vocabulary] if sensitive else vocabulary,
        "oov_rate": reference,
        "oov_reference": "vocabulary of a random half of the training texts, measured on the other half",
    }


def words(series: pd.Series) -> pd.Series:
    """Each text as its lower-cased word tokens (a missing text has none)."""
    texts = series.astype(object).where(series.notna(), "").astype(str)
    return texts.str.lower().str.findall(WORD_PATTERN)


def top_words(tokens: pd.Series, size: int) -> list[str]:
    counts = tokens.explode().dropna().value_counts()
    return counts.index[:size].astype(str).tolist()


def oov_rate(tokens: pd.Series, vocabulary: set[str], hashed: bool = False) -> float:
    """Share of word occurrences not in the vocabulary."""
    counts = tokens.explode().dropna().value_counts()
    if counts.empty:
        return 0.0
    keys = [hash_value(w) for w in counts.index] if hashed else counts.index.astype(str)
    known = np.fromiter((k in vocabulary for k in keys), dtype=bool, count=len(counts))
    return float(counts.to_numpy()[~known].sum() / counts.sum())


def pixel_stats(pixels: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Each image's pixel mean and standard deviation (0-255), a chunk at a time to bound memory."""
    flat = pixels.reshape(len(pixels), -1)
    means, stds = np.empty(len(flat)), np.empty(len(flat))
    for start in range(0, len(flat), chunk):
        block = flat[start : start + chunk].astype(np.float64)
        means[start : start + chunk] = block.mean(axis=1)
        stds[start : start + chunk] = block.std(axis=1)
    return means, stds


# ---- the comparison -------------------------------------------------------------------------------------


def compare(
    profile: dict[str, Any],
    frame: pd.DataFrame,
    pixels: np.ndarray | None = None,
    params: DriftParams | None = None,
) -> dict[str, Any]:
    """New data against a reference profile: per-column metrics, a status per column and overall.

    A column is critical when any metric reaches its critical threshold, warning when one reaches its
    warning threshold. A column of the reference that the new data lacks is critical ("missing"), except
    the label: unlabelled data (a serving batch) is fine. Columns the reference never saw are listed.
    """
    from tasks.config import DriftParams

    params = params or DriftParams()
    if frame.empty:
        raise ShipyardError("drift: the new data has no rows")
    stats = dict(zip(PIXEL_COLUMNS, pixel_stats(pixels), strict=True)) if pixels is not None else {}
    columns: dict[str, Any] = {}
    for name, ref in profile["columns"].items():
        values = stats.get(name) if ref.get("derived") == "pixels" else frame.get(name)
        if values is None:
            columns[name] = absent_column(ref, name == profile["target"])
            continue
        metrics = column_drift(ref, values)
        columns[name] = {"kind": ref["kind"], **judge(metrics, params), **metrics}
    known = set(profile["columns"]) | set(profile.get("skipped_columns", []))
    return {
        "status": max((c["status"] for c in columns.values()), key=LEVELS.index, default="ok"),
        "task": profile["task"],
        "rows": len(frame),
        "reference_rows": profile["rows"],
        "critical_columns": [n for n, c in columns.items() if c["status"] == "critical"],
        "warning_columns": [n for n, c in columns.items() if c["status"] == "warning"],
        "missing_columns": [n for n, c in columns.items() if c.get("missing")],
        "extra_columns": [str(c) for c in frame.columns if c not in known],
        "thresholds": {"warning": params.warning.model_dump(), "critical": params.critical.model_dump()},
        "columns": columns,
    }


def absent_column(ref: dict[str, Any], is_target: bool) -> dict[str, Any]:
    if is_target:
        return {"kind": ref["kind"], "status": "ok", "breaches": {}, "reasons": [], "compared": False}
    return {
        "kind": ref["kind"],
        "status": "critical",
        "breaches": {"missing": "critical"},
        "reasons": ["missing from the new data"],
        "missing": True,
    }


def column_drift(ref: dict[str, Any], values: pd.Series | np.ndarray) -> dict[str, Any]:
    kind = ref["kind"]
    if kind == "numeric":
        return numeric_drift(ref, values if isinstance(values, np.ndarray) else to_floats(values))
    if kind == "categorical":
        return categorical_drift(ref, values)
    if kind == "text":
        return text_drift(ref, values)
    missing = float(values.isna().mean())  # "unique": an identifier, not compared
    return {"null_share": missing, "reference_null_share": ref["null_share"], "compared": False}


def numeric_drift(ref: dict[str, Any], values: np.ndarray) -> dict[str, Any]:
    """PSI on the reference's quantile bins (missing values are a bin of their own) and KS on the
    present values against the reference's sketch."""
    finite = np.sort(values[np.isfinite(values)])
    shares = bin_shares(finite, np.asarray(ref["edges"], dtype=np.float64), len(values))
    d, p = ks_from_sketch(ref, finite)
    return {
        "psi": psi(np.asarray(ref["shares"]), shares),
        "ks": d,
        "ks_pvalue": p,
        "null_share": 1 - finite.size / len(values),
        "reference_null_share": ref["null_share"],
    }


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = EPSILON) -> float:
    """Population stability index: sum((a - e) * ln(a / e)); an empty bin counts as `eps`."""
    e, a = np.clip(expected, eps, None), np.clip(actual, eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_from_sketch(ref: dict[str, Any], ordered: np.ndarray) -> tuple[float | None, float | None]:
    """Two-sample KS statistic D between the reference (its quantile sketch) and the new sorted values,
    with the asymptotic p-value for the reference's and the new data's row counts.

    Both CDFs are compared just below and at each sketch point; between two points the reference CDF
    moves by at most one sketch step, so D is within 1/(SKETCH_POINTS - 1) of the exact statistic.
    """
    sketch, probs = np.asarray(ref["sketch"]), np.asarray(ref["probs"])
    if sketch.size == 0 or ordered.size == 0:
        return None, None
    from scipy.special import kolmogorov

    points = np.unique(sketch)
    ref_below = probs[np.searchsorted(sketch, points, side="left")]
    ref_at = probs[np.searchsorted(sketch, points, side="right") - 1]
    new_below = np.searchsorted(ordered, points, side="left") / ordered.size
    new_at = np.searchsorted(ordered, points, side="right") / ordered.size
    d = float(max(np.abs(new_below - ref_below).max(), np.abs(new_at - ref_at).max()))
    n, m = ref["count"], ordered.size
    return d, float(kolmogorov(d * math.sqrt(n * m / (n + m))))


def categorical_drift(ref: dict[str, Any], values: pd.Series) -> dict[str, Any]:
    """Jensen-Shannon distance (base 2) over the reference's categories, "other" and missing; the share of
    present rows whose category training never saw (unknown when the reference kept only its top)."""
    from scipy.spatial.distance import jensenshannon

    counts, missing = category_counts(values, ref["hashed"])
    rows, known = len(values), ref["frequencies"]
    seen = counts.reindex(list(known), fill_value=0).to_numpy()
    unseen = counts[~counts.index.isin(list(known))]
    expected = [*known.values(), ref["other"], ref["null_share"]]
    actual = [*(seen / rows), unseen.sum() / rows, missing / rows]
    js = float(jensenshannon(expected, actual, base=2))
    present = rows - missing
    exact = ref["other"] == 0
    result = {
        "js": 0.0 if math.isnan(js) else js,
        "new_category_rate": (unseen.sum() / present if present else 0.0) if exact else None,
        "null_share": missing / rows,
        "reference_null_share": ref["null_share"],
    }
    if exact and len(unseen):
        result["new_categories"] = int(len(unseen))
        if not ref["hashed"]:
            result["new_category_examples"] = [str(k) for k in unseen.nlargest(5).index]
    return {k: float(v) if isinstance(v, np.floating | np.integer) else v for k, v in result.items()}


def text_drift(ref: dict[str, Any], values: pd.Series) -> dict[str, Any]:
    """Length (words) PSI and KS, and the out-of-vocabulary rate's increase over the reference's."""
    tokens = words(values)
    length = numeric_drift(ref["length"], tokens.str.len().to_numpy(dtype=np.float64))
    rate = oov_rate(tokens, set(ref["vocabulary"]), ref["hashed"])
    return {
        "psi": length["psi"],
        "ks": length["ks"],
        "ks_pvalue": length["ks_pvalue"],
        "oov_rate": rate,
        "reference_oov_rate": ref["oov_rate"],
        "oov_increase": rate - ref["oov_rate"],
        "null_share": float(values.isna().mean()),
        "reference_null_share": ref["null_share"],
    }


def judge(metrics: dict[str, Any], params: DriftParams) -> dict[str, Any]:
    """The column's status, which metrics reached which level, and one readable reason per breach."""
    breaches, reasons = {}, []
    for key in METRICS:
        value = metrics.get(key)
        if value is None:
            continue
        for level in ("critical", "warning"):
            limit = getattr(getattr(params, level), key)
            if value >= limit:
                breaches[key] = level
                reasons.append(f"{METRIC_NAMES[key]} {_num(value)} >= {_num(limit)} ({level})")
                break
    status = max(breaches.values(), key=LEVELS.index, default="ok")
    return {"status": status, "breaches": breaches, "reasons": reasons}


def _num(value: float) -> str:
    return f"{value:.2f}" if value == 0 or abs(value) >= 0.095 else f"{value:.2g}"


# ---- reading the report ---------------------------------------------------------------------------------


def drift_lines(report: dict[str, Any]) -> list[str]:
    """One line per critical, then warning column: the column, each metric over a threshold, the level."""
    names = report.get("critical_columns", []) + report.get("warning_columns", [])
    return [f"column '{name}': {', '.join(report['columns'][name]['reasons'])}" for name in names]


def critical_summary(report: dict[str, Any], limit: int = 5) -> str:
    """ "'x' (PSI 4.81, KS 0.93), 'y' (missing)": the critical columns with their critical metrics."""
    parts = []
    for name in report["critical_columns"][:limit]:
        column = report["columns"][name]
        shown = [
            "missing" if key == "missing" else f"{METRIC_NAMES[key]} {_num(column[key])}"
            for key, level in column["breaches"].items()
            if level == "critical"
        ]
        parts.append(f"'{name}' ({', '.join(shown)})")
    more = len(report["critical_columns"]) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


# ---- drift of a data file -------------------------------------------------------------------------------


def drift_of_file(data: str, params: Params, reference: str | None = None) -> dict[str, Any]:
    """A data file (read as ingest reads it) against a profile.json, by default the production model's."""
    profile, origin = load_reference(params, reference)
    frame, pixels = read_batch(data, params, profile)
    report = compare(profile, frame, pixels, params.drift)
    return {"status": report["status"], "data": data, "reference": origin, **report}


def load_reference(params: Params, reference: str | None) -> tuple[dict[str, Any], str]:
    """(profile, where it came from): the given file, or the production model's published profile."""
    if reference:
        return read_profile(Path(reference)), str(reference)
    from tasks.registry import production_manifest

    registry = params.promote.registry
    manifest = production_manifest(registry)
    if manifest is None:
        raise ShipyardError(
            f"{registry}: no production model to compare with; run the pipeline first "
            "(shipyard run) or pass --reference PROFILE.json"
        )
    folder = Path(registry) / "versions" / manifest["version"]
    if not manifest.get("profile"):
        raise ShipyardError(
            f"{folder}: the production model has no training profile (exported before drift checks); "
            "run the pipeline again to publish one, or pass --reference PROFILE.json"
        )
    return read_profile(folder / manifest["profile"]), f"production {manifest['version']}"


def production_profile(registry: str | Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The training profile published with a registry version, None when it has none."""
    name = manifest.get("profile")
    return read_profile(Path(registry) / "versions" / manifest["version"] / name) if name else None


def read_profile(path: Path) -> dict[str, Any]:
    try:
        profile = read_json(path)
    except FileNotFoundError:
        raise ShipyardError(f"{path}: profile not found") from None
    except (OSError, ValueError) as err:
        raise ShipyardError(f"{path}: not a readable profile: {err}") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("columns"), dict):
        raise ShipyardError(f"{path}: not a shipyard data profile (export/profile.json)")
    if profile.get("format", 0) > PROFILE_FORMAT:
        raise ShipyardError(f"{path}: profile format {profile['format']} is newer than this shipyard's")
    return profile


def read_batch(data: str, params: Params, profile: dict[str, Any]) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The new data as the reference was built from: a table, or an image folder at the training size."""
    if profile["task"] == "image":
        from tasks.images import is_image_source, read_images

        if not is_image_source(data):
            raise ShipyardError(
                f"{data}: the reference is an image model's; expected a folder of class folders of "
                "images (or IDX files), as ingest reads"
            )
        image = profile.get("image") or {}
        size = (image["height"], image["width"]) if image else None
        images = read_images(data, profile["target"], size=size, channels=image.get("channels"))
        return images.meta, images.pixels
    from tasks.ingest import read_source

    frame = read_source(params.ingest.model_copy(update={"source": data, "format": "auto"}))
    text = profile.get("text_column")
    if text and text in frame.columns:
        from tasks.texts import normalise_texts

        frame[text] = normalise_texts(frame[text])
    return frame, None
