"""The caption above a section table: what every row of it shares, said as a paper's caption says
it (issue 26 follow-up). The samples and the reference by their folder or file name, with n and
image size per side and any resize (the rows' samples_* and data_* columns); the feature network
and the resize mode (tf1 / clean) where the table shows feature metrics; then the other shared
settings as `key=value`. No JSON and no absolute paths: a path is named by its last part (the full
paths stay in results.csv, the manifest and report.html's provenance).

    Samples: sgen (40 images, 64×64 px, as stored). Reference: sref (image folder; 150 images,
    64×64 px, as stored). Features: Inception-v3 (TF-FID) with tf1 resize (TF1 bilinear to 299 px,
    as torch-fidelity).

Pure functions of the settings.
"""
from __future__ import annotations

import json
import re
from pathlib import PurePath
from typing import Any, Mapping, Sequence

from reports.metric_kinds import metric_kind

SHARED = "Settings shared by every row: "
# how a caption line starts: the terminal wraps these lines as prose, not as table rows
CAPTION_STARTS = ("Samples:", "Reference:", "Features:", SHARED.rstrip())
SAMPLE_COLUMNS = ("samples_n", "samples_sizes", "samples_resize")
DATA_COLUMNS = ("data", "data_n", "data_resolution", "data_sizes", "data_resize", "data_root", "data_seed",
                "reference")
PATH_SETTINGS = ("checkpoint", "data_root", "reference", "path", "prompts", "adapter", "lora")
FILE_DATA = {"folder": "image folder", "npz": "npz", "statistics": "statistics: mu, sigma"}
MODES = {"tf1": "tf1 resize (TF1 bilinear to 299 px, as torch-fidelity)",
         "clean": "clean resize (PIL bicubic to 299 px, as clean-fid)"}
FEATURE_GROUPS = ("fid", "kid", "fraction", "density", "inception_score", "cmmd")   # metrics on network features
INCEPTION = "Inception-v3 (TF-FID)"


def settings_caption(constant: Mapping[str, Any], metrics: Sequence[str] = ()) -> str:
    """The caption for settings `constant` (shared by every row) of a table showing `metrics`."""
    rest = dict(constant)
    params = _params(rest.pop("pipeline_params", None))
    sentences = [_samples(rest, params), _reference(rest)]
    if "resize_mode" in rest or any(sentences):   # rows that say how they were measured (not hand-made ones)
        sentences.append(_features(rest, metrics))
    if sentences[0] and isinstance(params, dict):   # samples made elsewhere: their params are said above
        params = {k: v for k, v in params.items() if k == "prompts" and v}
    if isinstance(params, dict):
        rest.update({k: v for k, v in params.items() if v is not None and k not in rest})
    elif params is not None:
        rest["pipeline_params"] = params
    shared = [f"{k}={format_setting(v, k)}" for k, v in sorted(rest.items()) if v is not None]
    if shared:
        sentences.append(SHARED + ", ".join(shared) + ".")
    return " ".join(s for s in sentences if s)


def format_setting(value: Any, key: str = "") -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    text = str(value)
    return path_name(text) if key in PATH_SETTINGS or text.startswith(("/", "~")) else text


def path_name(text: str) -> str:
    """`/tmp/x/sref` -> `sref`; a name without a folder stays as it is."""
    return PurePath(text.rstrip("/\\")).name or text


def _params(value: Any) -> Any:
    """pipeline_params as a dict (it is a JSON object in the rows), or the value as it is."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, dict) else value
    return value


def _size_text(sizes: Any) -> str:
    """`64x64` -> `64×64 px`; mixed sizes keep their counts; unknown (a statistics file): ''."""
    if not isinstance(sizes, str) or not sizes or sizes.startswith("unknown"):
        return ""
    return re.sub(r"(\d+)x(\d+)", r"\1×\2", sizes) + " px"


def _count_text(n: Any) -> str:
    if n is None or (isinstance(n, float) and n != n):
        return ""
    n = int(float(n))
    return f"{n} image{'s' if n != 1 else ''}"


def _resize_text(resize: Any, as_stored: bool) -> str:
    if not isinstance(resize, str) or resize.startswith("unknown"):
        return ""
    if resize == "none":
        return "as stored" if as_stored else ""
    return f"resized: {resize}"


def _samples(rest: dict[str, Any], params: Any) -> str:
    """'Samples: NAME (n images, S px, as stored).' where the rows are samples made elsewhere."""
    if not any(c in rest for c in SAMPLE_COLUMNS):
        return ""
    n, sizes, resize = (rest.pop(c, None) for c in SAMPLE_COLUMNS)
    facts = ", ".join(t for t in (_count_text(n), _size_text(sizes), _resize_text(resize, True)) if t)
    name = _samples_name(str(params["path"])) if isinstance(params, dict) and params.get("path") else ""
    if name:
        return f"Samples: {name}" + (f" ({facts})." if facts else ".")
    return f"Samples: {facts}." if facts else ""


def _samples_name(path: str) -> str:
    """The folder's name or the npz file's stem, as the external family labels its rows
    (models.families.external.samples_name; not imported: it loads torch, which reports never do)."""
    name = path_name(path)
    return name[:-4] if name.lower().endswith(".npz") else name


def _reference(rest: dict[str, Any]) -> str:
    """'Reference: NAME (kind; n images, S px, as stored).' from the data_* columns."""
    if not any(c in rest for c in DATA_COLUMNS if c != "reference"):
        return ""
    data, n, resolution, sizes, resize, root, seed, statistics = (rest.pop(c, None) for c in DATA_COLUMNS)
    files = data in FILE_DATA or statistics is not None
    if statistics is not None:
        name, kind = path_name(str(statistics)), FILE_DATA["statistics"]
    elif root is not None:
        name, kind = path_name(str(root)), FILE_DATA.get(str(data), str(data))
    else:
        name, kind = str(data) if data is not None else "", f"seed {seed}" if seed is not None else ""
    size = _size_text(sizes) or (f"{resolution}×{resolution} px" if resolution is not None and statistics is None
                                 else "")
    facts = ", ".join(t for t in (_count_text(n), size, _resize_text(resize, files)) if t)
    inside = "; ".join(t for t in (kind, facts) if t)
    return f"Reference: {name}" + (f" ({inside})." if inside else ".")


def _features(rest: dict[str, Any], metrics: Sequence[str]) -> str:
    """'Features: Inception-v3 (TF-FID pool3), tf1 resize (...).' where the table shows feature metrics."""
    spaces = []
    for metric in metrics:
        if metric_kind(metric).group not in FEATURE_GROUPS:
            continue
        found = re.search(r"\[(.*)\]$", str(metric))
        space = found.group(1) if found else INCEPTION
        if space not in spaces:
            spaces.append(space)
    if not spaces:
        return ""
    mode = rest.pop("resize_mode", None) if INCEPTION in spaces else None   # metrics.resize_mode: the Inception's
    if mode is not None:
        spaces[spaces.index(INCEPTION)] += f" with {MODES.get(str(mode), f'{mode} resize')}"
    return "Features: " + ", ".join(spaces) + "."
