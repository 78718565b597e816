"""Writes docs/benchmarks.md from bench/results/*.json, and checks the figures the docs quote.

docs/benchmarks.md has one section per benchmark script (its docstring's first sentence), and
under it one per result file the script wrote: the file's description, its commit, date, CPU
model and command, and a table of its headline figures. Which figures are headline is said per
file in SPECS below (a row path and the keys tabulated per row); a file without a spec gets its
top-level numbers. Every cell is a value of the file at the row's path and the column's key,
rounded to 4 significant digits. Nothing in the page is written by hand:
`tests/test_docs_figures.py` fails when it differs from what this script writes.

A figure quoted in README.md or docs/*.md is checked when it is written as a link to its
result file, e.g. `[0.840 / 0.968](bench/results/make_demo.json)` (from docs/:
`../bench/results/...`): every number in the link's text must be a value of that file, at the
precision written (0.840 matches 0.8396). `--check` lists the figures that are not.

  .venv/bin/python bench/make_benchmarks_md.py            # rewrite docs/benchmarks.md
  .venv/bin/python bench/make_benchmarks_md.py --check    # exit 1 on a stale page or figure
"""

import argparse
import ast
import glob
import json
import os
import re
import sys
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join("bench", "results")
PAGE = os.path.join("docs", "benchmarks.md")
NOT_RECORDED = "not recorded"
# Marks a provenance field the bench did not record (the file's `*_note` says where it is from).
RECONSTRUCTED = "†"
# A number as the docs write it: optional sign (ASCII or Unicode minus), digits, decimals.
NUMBER = re.compile(r"[-\u2212]?\d+(?:\.\d+)?")
# Inline links [text](target) and reference links [text][ref] with their definitions.
INLINE_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
REFERENCE_LINK = re.compile(r"\[([^\]\n]+)\]\[([^\]\n]+)\]")
REFERENCE_DEFINITION = re.compile(r"^\s*\[([^\]\n]+)\]:\s*(\S+)", re.MULTILINE)
# Top-level keys that are provenance, not settings.
# Where a script's docstring says where it writes its JSON: "; writes JSON (default ...)".
WRITES_JSON = re.compile(r"(;|\.)? [Ww]rites [^;]*?\(default [^)]*\)\.?$")
PROVENANCE_KEYS = ("command", "commit", "date", "description", "removed")


@dataclass(frozen=True)
class Table:
    """A table of one result file's figures.

    rows: a dotted path into the report whose `*` parts iterate a list or a dict ("" is the
      report itself, one row), e.g. "runs.*.results.*".
    columns: dotted keys of each row's item, tabulated as they are named.
    labels: one header per `*` of rows: a dict's keys show under it; for a list it names a
      field of each item to show first (None: no column)."""
    rows: str
    columns: tuple
    labels: tuple = ()


def _training_runs(*extra):
    """The table of a bench/tiny_shapes.py report: one row per run."""
    return Table("runs.*", extra + ("train_images", "images_per_second", "metrics.bbox.AP",
                                    "metrics.bbox.AP50", "metrics.bbox.AP75", "metrics.segm.AP",
                                    "metrics.segm.AP50", "metrics.segm.AP75"), labels=("variant",))


_EXPORT = Table("results.*", ("preset", "image_size", "variant", "file_bytes", "export_seconds", "latency_ms"))
_MOBILE = Table("variants.*", ("file_bytes", "latency_ms.1", "latency_ms.2"), labels=("quantization",))
# The headline figures of each result file.
SPECS = {
    "bfloat16_inference.json": (
        Table("runs.*.results.*", ("seconds", "bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"),
              labels=("model", "precision")),
        Table("largest_drop_float32_to_bfloat16", ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"))),
    "box_normalizer_shapes.json": (_training_runs("data_seed"),),
    "export.json": (_EXPORT,),
    "export_accuracy.json": (
        Table("runs.*.results.*", ("file_bytes", "bbox.AP", "bbox.AP50", "segm.AP", "segm.AP50"),
              labels=("model", "variant")),
        Table("worst_int8_drop.*", ("AP", "AP50", "AP75"), labels=("task",))),
    "export_tiny.json": (_EXPORT,),
    "finetune_shapes.json": (
        Table("models.*", ("epochs", "seconds.train", "first_loss", "final_loss", "bbox_AP",
                           "bbox_AP50", "segm_AP", "segm_AP50"), labels=("model",)),),
    "make_demo.json": (
        Table("", ("epochs", "train_seconds", "train_images_per_second", "metrics.bbox.AP",
                   "metrics.bbox.AP50", "metrics.bbox.AP75", "metrics.segm.AP", "metrics.segm.AP50",
                   "metrics.segm.AP75")),),
    "mobile.json": (_MOBILE,),
    "mobile_mobilenetv3_fpn.json": (_MOBILE,),
    "paste.json": (
        Table("results.*", ("numpy_ms.median", "tensorflow_ms.median", "numpy_ms.min",
                            "tensorflow_ms.min", "numpy_after_model_ms",
                            "tensorflow_after_model_ms"),
              labels=("boxes/method",)),),
    "precision_shapes.json": (_training_runs("data_seed"),),
    "rois_per_image.json": (
        Table("results.*", ("rois_per_image", "mask_head_rois_per_image", "seconds_per_step",
                            "images_per_second", "speed_up_over_512")),),
    "scale.json": (
        Table("results.*", ("preset", "image_side", "batch_per_replica", "precision", "xla",
                            "replicas", "images_per_second")),),
    "serve_r50_fpn.json": (
        Table("runs.*", ("capacity_rps", "low_rate_rps", "model_alone_ms.predict_ms",
                         "model_alone_ms.paste_kept_ms", "model_alone_ms.mean_kept_detections",
                         "overhead_ms", "overhead_share_of_model", "server_only_overhead_ms"),
              labels=("precision",)),
        Table("runs.*.points.*", ("phase", "rate_rps", "achieved_rps", "p50_ms", "p90_ms", "p95_ms",
                                  "p99_ms", "max_ms", "mean_detections", "count_503", "count_504"),
              labels=("precision", None)),
        Table("bfloat16_speedup_over_float32", ("capacity", "model_alone_predict"))),
    "serve_tiny.json": (
        Table("", ("model_alone_ms.predict_ms", "model_alone_ms.paste_kept_ms",
                   "model_alone_ms.rle_encode_ms", "overhead_ms.default rle",
                   "server_only_overhead_ms.default rle", "overhead_ms.default box",
                   "default.capacity_rps.rle", "batch_1.capacity_rps.rle",
                   "two_workers.capacity_rps.rle", "default.rss_growth_after_warm_up",
                   "default.overload.only_200_and_503", "default.overload.normal_within_2_s",
                   "batch_1.overload.normal_within_2_s",
                   "two_workers.overload.normal_within_2_s")),
        Table("points.*", ("server", "kind", "phase", "rate_rps", "achieved_rps", "p50_ms",
                           "p99_ms", "max_ms", "count_503", "count_504"), labels=(None,)),
        Table("default.answer_sizes.*", ("mean_answer_bytes", "mean_detections"),
              labels=("request",)),
        Table("default.rss.*", ("requests", "rss_mb"), labels=(None,))),
    "hard_gap.json": (
        Table("sets.*.models.*", ("bbox.all.AP", "bbox.all.AP50", "bbox.all.AP75", "bbox.all.AP90",
                                  "segm.all.AP", "segm.all.AP75", "segm.all.AP90",
                                  "bbox.occluded.AP", "bbox.by_size.small (< 16²).AP"),
              labels=("data", "model")),
        Table("sets.*.models.*.bbox.by_category.*", ("AP", "AP75", "AP90"),
              labels=("data", "model", "category"))),
    "tiny_box_head_seeds.json": (_training_runs("data_seed", "training_seed"),),
    "tiny_box_head_shapes.json": (_training_runs("data_seed"),),
    "tiny_hard_shapes.json": (_training_runs("data_seed"),),
    "tiny_preset_shapes.json": (_training_runs("data_seed"),),
    "tiny_preset_shapes_seed1.json": (_training_runs("data_seed"),),
    "tiny_schedule_shapes.json": (_training_runs("data_seed"),),
    "tiny_schedule_shapes_seed1.json": (_training_runs("data_seed"),),
    "tiny_weight_decay_seeds.json": (_training_runs("data_seed", "training_seed"),),
    "tiny_weight_decay_sets.json": (_training_runs("data_seed"),),
    "tiny_weight_decay_shapes.json": (_training_runs("data_seed"),),
    "yolo_hard_shapes.json": (
        Table("runs.*", ("epochs", "train_seconds", "images_per_second", "last.metrics.bbox.AP",
                         "last.metrics.bbox.AP50", "last.metrics.bbox.AP75", "last.metrics.segm.AP",
                         "last.metrics.segm.AP50", "last.metrics.segm.AP75", "best.metrics.bbox.AP",
                         "best.metrics.segm.AP"), labels=("data_seed",)),),
    "torchvision.json": (
        Table("results.*", ("median_ms.torch", "median_ms.keras_float32_end_to_end",
                            "median_ms.keras_float32_model", "median_ms.keras_float32_paste",
                            "median_ms.keras_bfloat16_end_to_end", "median_ms.keras_bfloat16_model",
                            "float32.end_to_end_speedup_over_torch",
                            "bfloat16.end_to_end_speedup_over_torch",
                            "float32.model_speedup_over_torch", "bfloat16.model_speedup_over_torch",
                            "float32.model_gflop_per_s", "bfloat16.model_gflop_per_s"),
              labels=("image",)),
        Table("conv_probe", ("float32_gflops", "bfloat16_gflops", "ratio"))),
    "fused_forms.json": (
        Table("results.*", ("median_ms.float32_mul_add", "median_ms.float32_fused_bn",
                            "median_ms.float32_folded", "median_ms.bfloat16_mul_add",
                            "median_ms.bfloat16_fused_bn", "median_ms.bfloat16_folded",
                            "float32.fused_bn_speedup", "float32.folded_speedup",
                            "bfloat16.fused_bn_speedup", "bfloat16.folded_speedup"),
              labels=("image",)),),
    "profile_precision.json": (
        Table("results.*", ("wall_ms.median", "traced_ms_per_call", "conv_gflop_per_s",
                            "model_gflop_per_s", "conv_share_of_probe", "model_share_of_probe"),
              labels=("precision",)),
        Table("results.*.parts.*", ("ms", "share", "by_kind_ms.convolution", "by_kind_ms.matmul",
                                    "by_kind_ms.cast", "by_kind_ms.nms", "by_kind_ms.other",
                                    "conv_gflop_per_s"), labels=("precision", "part")),
        Table("results.*.kinds.*", ("ms", "share"), labels=("precision", "kind")),
        Table("bfloat16_speedup", ("wall", "backbone", "fpn", "rpn_head", "box_head", "mask_head",
                                   "box_roi_align", "mask_roi_align", "proposals", "detections"))),
    "frozen_norm_accuracy.json": (
        Table("runs.*.trained.*", ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"),
              labels=("run", "precision")),
        Table("runs.*.frozen.*", ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"),
              labels=("run", "precision")),
        Table("largest_frozen_bfloat16_drop", ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"))),
}
# The same benchmarks on a CPU with AMX-BF16 (docs/export.md, "bfloat16 on a CPU with AMX").
SPECS["torchvision_amx.json"] = SPECS["torchvision.json"]
SPECS["serve_r50_fpn_amx.json"] = SPECS["serve_r50_fpn.json"]
SPECS["profile_precision_amx.json"] = SPECS["profile_precision.json"]


def result_files(root=ROOT):
    """Paths of the result files, relative to `root`, sorted."""
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, RESULTS, "*.json")))


def provenance(report):
    """(commands, commit, CPU model, date) of a report, each NOT_RECORDED where the file has none
    and marked RECONSTRUCTED where the file notes the bench did not record it.

    Commands come from `command`, `commands` or `reproduce`; the commit from `commit` or
    `machine.commit`; the CPU model from `machine.cpu_model`, with `machine.bfloat16_cpu_flags`
    where recorded; the date from `date`."""
    machine = report.get("machine") or {}
    commands = []
    for key in ("reproduce", "commands", "command"):
        value = report.get(key)
        commands += value if isinstance(value, list) else [value] if value else []
    commit = report.get("commit") or machine.get("commit") or NOT_RECORDED
    cpu = machine.get("cpu_model") or NOT_RECORDED
    if machine.get("bfloat16_cpu_flags") is not None:
        cpu += f" ({', '.join(machine['bfloat16_cpu_flags']) or 'no bfloat16 flags'})"
    date = report.get("date") or NOT_RECORDED
    marks = [RECONSTRUCTED if report.get(note) else "" for note in ("commit_note", "date_note")]
    if machine.get("cpu_model_note"):
        cpu += RECONSTRUCTED
    if report.get("command_note"):
        commands = [c + " " + RECONSTRUCTED for c in commands]
    return commands or [NOT_RECORDED], commit + marks[0], cpu, date + marks[1]


def _get(item, key):
    """The value at dotted `key` inside `item`, or KeyError."""
    for part in key.split(".") if key else []:
        if isinstance(item, dict) and part in item:
            item = item[part]
        elif isinstance(item, list) and part.isdigit() and int(part) < len(item):
            item = item[int(part)]
        else:
            raise KeyError(key)
    return item


def _rows(item, parts, labels):
    """[(((label header, label value), ...), row item)] at the path `parts` below `item`."""
    if not parts:
        return [((), item)]
    head, rest = parts[0], parts[1:]
    if head != "*":
        return _rows(_get(item, head), rest, labels)
    label, labels = (labels[0] if labels else None), labels[1:]
    if isinstance(item, dict):
        entries = [(((label or "key", key),), value) for key, value in item.items()]
    elif isinstance(item, list):
        entries = [(((label, entry.get(label)),) if label and isinstance(entry, dict) else (), entry)
                   for entry in item]
    else:
        raise KeyError("*")
    return [(cells + more, row) for cells, entry in entries for more, row in _rows(entry, rest, labels)]


def table(report, spec, name="report"):
    """(header, rows of values) of one Table of `report`; None where a row lacks a key.

    A row path that is not in the report, or a column no row has, raises ValueError naming
    `name`: the spec no longer fits its file."""
    try:
        rows = _rows(report, spec.rows.split(".") if spec.rows else [], spec.labels)
    except KeyError as error:
        raise ValueError(f"{name}: rows {spec.rows!r} are not in the file (at {error})") from None
    if not rows:
        raise ValueError(f"{name}: rows {spec.rows!r} are empty")
    values = []
    for labels, item in rows:
        row = [value for _, value in labels]
        for key in spec.columns:
            try:
                row.append(_get(item, key))
            except KeyError:
                row.append(None)
        values.append(row)
    header = [label for label, _ in rows[0][0]] + list(spec.columns)
    for column, key in enumerate(spec.columns, start=len(rows[0][0])):
        if all(row[column] is None for row in values):
            raise ValueError(f"{name}: no row of {spec.rows or 'the report'!r} has {key!r}")
    return header, values


def _generic(report):
    """The table of a file without a spec: its top-level numbers."""
    keys = tuple(key for key, value in report.items() if _is_number(value) or _is_numbers(value))
    return (Table("", keys),) if keys else ()


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_numbers(value):
    return isinstance(value, list) and bool(value) and all(_is_number(v) for v in value)


def _numbers(value):
    """Every number inside a report, flat."""
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    return [value] if _is_number(value) else []


def format_value(value):
    """A cell: a float to 4 significant digits (whole above 1000), an integer with thousands
    separated, a list of numbers joined by ×, None as –."""
    if value is None:
        return "–"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value).replace("|", "/")
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if _is_numbers(value):
        return " × ".join(format_value(v) for v in value)
    return json.dumps(value).replace("|", "/")


def _settings(report, specs):
    """Top-level scalars (and short lists of numbers) that are no table's column."""
    used = {key.split(".")[0] for spec in specs if not spec.rows for key in spec.columns}
    return [f"`{key}` {format_value(value)}" for key, value in report.items()
            if key not in used and key not in PROVENANCE_KEYS and not key.endswith("_note")
            and (_is_number(value) or _is_numbers(value) or isinstance(value, (bool, str)))]


def _docstrings(root):
    """{script file name: its docstring's first paragraph, less where it writes its JSON}."""
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "bench", "*.py"))):
        with open(path, encoding="utf-8") as f:
            doc = " ".join((ast.get_docstring(ast.parse(f.read())) or "").split("\n\n")[0].split())
        found[os.path.basename(path)] = _sentence(WRITES_JSON.sub("", doc))
    return found


def _sentence(text):
    """`text` ending in a full stop."""
    text = text.strip()
    return text + ("" if not text or text.endswith(".") else ".")


def _script(commands, scripts):
    """The bench script that wrote a report: the last one its commands run (of each command,
    the first script it names: later ones are its arguments); None if none."""
    named = [found[0] for c in commands
             if (found := [s for s in re.findall(r"bench/(\w+\.py)", c) if s in scripts])]
    return named[-1] if named else None


def _markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(format_value(v) for v in row) + " |" for row in rows]


def _section(path, report):
    """The lines of one result file's section."""
    name = os.path.basename(path)
    commands, commit, cpu, date = provenance(report)
    lines = [f"### {name}", ""]
    text = " ".join(_sentence(report[key]) for key in ("description", "removed") if report.get(key))
    if text:
        lines += [text, ""]
    lines += [f"- [{path}](../{path}) · commit {commit} · {date} · CPU: {cpu}"]
    lines += [f"- command: `{c.removesuffix(' ' + RECONSTRUCTED)}`" + (" " + RECONSTRUCTED) * c.endswith(RECONSTRUCTED)
              for c in commands]
    specs = SPECS.get(name) or _generic(report)
    settings = _settings(report, specs)
    lines += ["- settings: " + ", ".join(settings)] if settings else []
    for i, spec in enumerate(specs):
        where = f"`{spec.rows}`" if spec.rows else "the file's top level"
        lines += [f"- rows: {where}", ""] if i == 0 else [f"Rows: {where}", ""]
        lines += _markdown_table(*table(report, spec, path)) + [""]
    if not specs:
        lines.append("")
    return lines


def render(root=ROOT):
    """The text of docs/benchmarks.md."""
    scripts = _docstrings(root)
    reports = {}
    for path in result_files(root):
        with open(os.path.join(root, path), encoding="utf-8") as f:
            reports[path] = json.load(f)
    by_script = {}
    for path, report in reports.items():
        by_script.setdefault(_script(provenance(report)[0], scripts), []).append(path)
    order = sorted(s for s in by_script if s) + ([None] if None in by_script else [])
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/make_benchmarks_md.py from bench/results/*.json: do not edit. -->",
        "",
        "Generated by `bench/make_benchmarks_md.py` from `bench/results/*.json` (run it after adding",
        "a result; `make test` fails when this page is stale). Per result file: what it measured,",
        "the commit, date, CPU model and command that wrote it, and its headline figures: each cell",
        "is the file's value at the row's path and the column's key, to 4 significant digits; the",
        "file holds the rest. " + RECONSTRUCTED + " marks what the bench did not record (the file's",
        "`*_note` says where it comes from). Timings depend on the machine and on what else ran on",
        "it: compare figures of one file only. **A bfloat16 speed figure names its CPU model**",
        "wherever it is quoted: bfloat16's speed differs between CPU models that both have",
        "AVX512-BF16. The docs quote a figure as a link to its result file; `make test` checks it.",
        "",
    ]
    shared = ("benchutil.py", "make_benchmarks_md.py", "serveload.py")  # modules, not benchmarks
    idle = sorted(s for s in scripts if s not in by_script and s not in shared)
    lines += [f"Scripts with no result here: {', '.join(f'`bench/{s}`' for s in idle)}.", ""] if idle else []
    for script in order:
        files = by_script[script]
        if script:
            lines += [f"## bench/{script}", "", scripts[script], ""]
        else:
            lines += ["## Not written by a bench script", ""]
        for path in files:
            lines += _section(path, reports[path])
    return "\n".join(lines)


def quoted_figures(markdown_path, root=ROOT):
    """[(line number, link text, result file relative to root)] of the links in one Markdown
    file that point into bench/results/."""
    with open(markdown_path, encoding="utf-8") as f:
        text = f.read()
    definitions = {label.lower(): target for label, target in REFERENCE_DEFINITION.findall(text)}
    base = os.path.dirname(os.path.abspath(markdown_path))
    quoted = []
    for pattern, resolve in ((INLINE_LINK, lambda t: t), (REFERENCE_LINK, lambda r: definitions.get(r.lower()))):
        for match in pattern.finditer(text):
            target = resolve(match.group(2))
            if not target:
                continue
            target = os.path.relpath(os.path.normpath(os.path.join(base, target.split("#")[0])), root)
            if target.startswith(RESULTS + os.sep) and target.endswith(".json"):
                quoted.append((text.count("\n", 0, match.start()) + 1, match.group(1), target))
    return sorted(quoted)


def figure_problems(markdown_paths, root=ROOT):
    """['FILE:LINE: ...'] for each quoted figure whose number is not in its result file, or whose
    file is missing. A link whose text holds no number (the file's name) quotes no figure."""
    problems = []
    cache = {}
    for md in markdown_paths:
        name = os.path.relpath(md, root)
        for line, text, target in quoted_figures(md, root):
            if target not in cache:
                full = os.path.join(root, target)
                cache[target] = _numbers(json.load(open(full, encoding="utf-8"))) if os.path.exists(full) else None
            values = cache[target]
            if values is None:
                problems.append(f"{name}:{line}: [{text}] links to {target}, which does not exist")
                continue
            for number in NUMBER.findall(text):
                if not _matches(number, values):
                    problems.append(f"{name}:{line}: {number} (in [{text}]) is not in {target}")
    return problems


def _matches(number, values):
    """Whether `number` as written (its decimals are its precision) rounds from one of `values`."""
    number = number.replace("\u2212", "-")
    decimals = len(number.split(".")[1]) if "." in number else 0
    x = float(number)
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    return any(abs(v - x) <= tolerance for v in values)


def doc_files(root=ROOT):
    """README.md and docs/*.md but the generated page: the files whose quoted figures are checked."""
    return [os.path.join(root, "README.md")] + sorted(
        p for p in glob.glob(os.path.join(root, "docs", "*.md")) if not p.endswith(PAGE))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when docs/benchmarks.md is stale or a quoted figure is not in its file")
    args = parser.parse_args()
    page = os.path.join(ROOT, PAGE)
    if not args.check:
        with open(page, "w", encoding="utf-8") as f:
            f.write(render())
        print(f"wrote {PAGE}")
    problems = figure_problems(doc_files())
    with open(page, encoding="utf-8") as f:
        if f.read() != render():
            problems.append(f"{PAGE} is not what bench/make_benchmarks_md.py writes: run it")
    print("\n".join(problems) or "every quoted figure is in its result file")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
