"""The docs' measured figures stay true to bench/results: docs/benchmarks.md is what its
generator writes, and every figure README.md and docs/*.md quote as a link to a result file is
in that file (bench/make_benchmarks_md.py)."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location(
        "make_benchmarks_md", os.path.join(ROOT, "bench", "make_benchmarks_md.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_page_is_what_the_generator_writes(generator):
    with open(os.path.join(ROOT, "docs", "benchmarks.md"), encoding="utf-8") as f:
        assert f.read() == generator.render(), (
            "docs/benchmarks.md is stale: run .venv/bin/python bench/make_benchmarks_md.py")


def test_every_quoted_figure_is_in_its_result_file(generator):
    files = generator.doc_files()
    assert os.path.join(ROOT, "README.md") in files
    assert not [f for f in files if f.endswith("benchmarks.md")]
    quoted = [q for f in files for q in generator.quoted_figures(f)]
    assert len(quoted) > 20, "the docs quote figures as links to bench/results (see the generator's docstring)"
    assert generator.figure_problems(files) == []


def test_a_figure_missing_from_its_file_is_reported(generator, tmp_path):
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    (results / "r.json").write_text(json.dumps({"runs": [{"AP": 0.8396, "ms": [12.3, None]}]}))
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "x.md"
    doc.write_text("ok [0.840 / 12.3 ms](../bench/results/r.json), also [0.84][r] and [r.json][r]\n"
                   "wrong [0.841][r]; missing [1.0](../bench/results/gone.json)\n\n"
                   "[r]: ../bench/results/r.json\n")
    problems = generator.figure_problems([str(doc)], root=str(tmp_path))
    assert problems == ["docs/x.md:2: 0.841 (in [0.841]) is not in bench/results/r.json",
                        "docs/x.md:2: [1.0] links to bench/results/gone.json, which does not exist"]


def test_every_result_file_records_its_command_and_commit(generator):
    for path in generator.result_files():
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            commands, commit, _, _ = generator.provenance(json.load(f))
        assert generator.NOT_RECORDED not in commands, f"{path} records no command"
        assert not commit.startswith(generator.NOT_RECORDED), f"{path} records no commit"


def test_every_cell_of_the_page_is_a_value_of_its_file(generator):
    names = {os.path.basename(p) for p in generator.result_files()}
    assert set(generator.SPECS) <= names, "a spec names a result file that is gone"
    cells = 0
    for path in generator.result_files():
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            report = json.load(f)
        values = generator._numbers(report)
        for spec in generator.SPECS.get(os.path.basename(path)) or generator._generic(report):
            header, rows = generator.table(report, spec, path)
            for row in rows:
                for value in row[len(header) - len(spec.columns):]:
                    if isinstance(value, (str, bool)):
                        continue
                    for number in generator.NUMBER.findall(generator.format_value(value).replace(",", "")):
                        assert generator._matches(number, values), f"{path}: {number} is not in the file"
                        cells += 1
    assert cells > 300


def test_a_table_is_the_values_at_its_rows_and_keys(generator):
    report = {"batch": 2, "runs": [
        {"model": "a", "results": {"f32": {"AP": 0.81234, "ms": 1234.5}, "bf16": {"AP": 0.8, "ms": None}}},
        {"model": "b", "results": {"f32": {"AP": 0.7}}}]}
    spec = generator.Table("runs.*.results.*", ("AP", "ms"), labels=("model", "precision"))
    assert generator.table(report, spec) == (
        ["model", "precision", "AP", "ms"],
        [["a", "f32", 0.81234, 1234.5], ["a", "bf16", 0.8, None], ["b", "f32", 0.7, None]])
    assert [generator.format_value(v) for v in (0.81234, 1234.5, None, 178362107, [640, 640])] == [
        "0.8123", "1,234", "–", "178,362,107", "640 × 640"]
    assert generator.table(report, generator._generic(report)[0]) == (["batch"], [[2]])


def test_a_spec_that_no_longer_fits_its_file_names_it(generator):
    report = {"runs": [{"AP": 0.5}]}
    with pytest.raises(ValueError, match=r"r\.json: rows 'results\.\*' are not in the file"):
        generator.table(report, generator.Table("results.*", ("AP",)), "r.json")
    with pytest.raises(ValueError, match=r"r\.json: no row of 'runs\.\*' has 'AP50'"):
        generator.table(report, generator.Table("runs.*", ("AP", "AP50")), "r.json")
