"""Writes docs/benchmarks.md from bench/results/*.json, and checks the figures the docs quote.

docs/benchmarks.md lists every benchmark script (its docstring's first line) and every result
file: its description, the command that wrote it, the commit and the CPU model, then each
figure it holds. Nothing in it is written by hand; `tests/test_docs_figures.py` fails when it
differs from what this script writes.

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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join("bench", "results")
PAGE = os.path.join("docs", "benchmarks.md")
# Keys whose scalar values name an entry of a list of runs, in the order they are shown.
LABEL_KEYS = ("name", "preset", "variant", "model", "image", "roi_align_impl", "precision",
              "replicas", "xla", "jit_compile", "rois_per_image", "data_seed", "training_seed",
              "seed", "size", "quantize")
NOT_RECORDED = "not recorded"
# A number as the docs write it: optional sign (ASCII or Unicode minus), digits, decimals.
NUMBER = re.compile(r"[-\u2212]?\d+(?:\.\d+)?")
# Inline links [text](target) and reference links [text][ref] with their definitions.
INLINE_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
REFERENCE_LINK = re.compile(r"\[([^\]\n]+)\]\[([^\]\n]+)\]")
REFERENCE_DEFINITION = re.compile(r"^\s*\[([^\]\n]+)\]:\s*(\S+)", re.MULTILINE)


def result_files(root=ROOT):
    """Paths of the result files, relative to `root`, sorted."""
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, RESULTS, "*.json")))


def provenance(report):
    """(command, commit, CPU model) of a report, each NOT_RECORDED where the file has none.

    Commands come from `command`, `commands` or `reproduce`; the commit from `commit` or
    `machine.commit`; the CPU model from `machine.cpu_model`, or its `cpu_model_note`."""
    machine = report.get("machine") or {}
    commands = []
    for key in ("reproduce", "commands", "command"):
        value = report.get(key)
        commands += value if isinstance(value, list) else [value] if value else []
    commit = report.get("commit") or machine.get("commit") or NOT_RECORDED
    note = report.get("commit_note")
    if note:
        commit = f"{commit} ({note})"
    cpu = machine.get("cpu_model") or NOT_RECORDED
    if machine.get("cpu_model_note"):
        cpu = f"{cpu} ({machine['cpu_model_note']})"
    return commands or [NOT_RECORDED], commit, cpu


def _label(item, index):
    """How an entry of a list shows in a figure's path: its naming keys, else its index."""
    if isinstance(item, dict):
        parts = [f"{key}={item[key]}" for key in LABEL_KEYS
                 if isinstance(item.get(key), (str, int, float)) and not isinstance(item.get(key), bool)]
        if parts:
            return "[" + ", ".join(parts) + "]"
    return f"[{index}]"


def figures(value, path=""):
    """[(path, number or list of numbers)]: every numeric value of a report, depth first.

    A list of numbers (a curve, a size) is one figure; booleans are not figures."""
    if isinstance(value, dict):
        return [f for key, item in value.items() for f in figures(item, f"{path}.{key}" if path else key)]
    if isinstance(value, list):
        if value and all(_is_number(v) or v is None for v in value):
            return [(path, value)] if any(_is_number(v) for v in value) else []
        return [f for i, item in enumerate(value) for f in figures(item, path + _label(item, i))]
    return [(path, value)] if _is_number(value) else []


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(value):
    """Every number inside a report, flat."""
    found = []
    for _, figure in figures(value):
        found += [v for v in (figure if isinstance(figure, list) else [figure]) if _is_number(v)]
    return found


def _format(figure):
    if isinstance(figure, list):
        return ", ".join("–" if v is None else _format(v) for v in figure)
    return f"{figure:.6g}" if isinstance(figure, float) else str(figure)


def _script_summaries(root):
    """[(script, its docstring's first line)] for every bench/*.py that is a benchmark."""
    rows = []
    for path in sorted(glob.glob(os.path.join(root, "bench", "*.py"))):
        with open(path, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
        rows.append((os.path.basename(path), " ".join(doc.split("\n\n")[0].split())))
    return rows


def render(root=ROOT):
    """The text of docs/benchmarks.md."""
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/make_benchmarks_md.py from bench/results/*.json: do not edit. -->",
        "",
        "Every figure the benchmarks measured, with the command that wrote it, the commit and the",
        "CPU model, as its result file records them (\"not recorded\" where it does not). Timings",
        "depend on the machine and on what else ran on it: compare figures of one file only. The",
        "docs quote a figure as a link to its file, and `make test` checks it is there",
        "(`bench/make_benchmarks_md.py --check`). Regenerate this page after adding a result:",
        "",
        "```sh",
        ".venv/bin/python bench/make_benchmarks_md.py",
        "```",
        "",
        "## Scripts",
        "",
        "| script | what it does |",
        "| --- | --- |",
    ]
    lines += [f"| `bench/{name}` | {summary.replace('|', '/')} |" for name, summary in _script_summaries(root)]
    lines += ["", "## Results", ""]
    files = result_files(root)
    lines += [", ".join(f"[{os.path.basename(p)}](#{_anchor(os.path.basename(p))})" for p in files), ""]
    for path in files:
        with open(os.path.join(root, path), encoding="utf-8") as f:
            report = json.load(f)
        commands, commit, cpu = provenance(report)
        lines += [f"### {os.path.basename(path)}", "", f"File: [{path}](../{path})", ""]
        if report.get("description"):
            lines += [report["description"], ""]
        lines += [f"- commit: {commit}", f"- CPU model: {cpu}", "- command:", "", "```sh"]
        lines += commands + ["```", "", "| figure | value |", "| --- | --- |"]
        lines += [f"| `{name}` | {_format(value)} |" for name, value in figures(report)
                  if not name.startswith("machine.")]
        lines.append("")
    return "\n".join(lines)


def _anchor(title):
    """GitHub's anchor of a heading (lower case, punctuation other than - and _ dropped)."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


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
