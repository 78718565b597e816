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
            commands, commit, _ = generator.provenance(json.load(f))
        assert generator.NOT_RECORDED not in commands, f"{path} records no command"
        assert not commit.startswith(generator.NOT_RECORDED), f"{path} records no commit"
