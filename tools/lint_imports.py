"""`lint-imports` (import-linter) over this repository's real import graph: `make test` runs it.

import-linter finds a package's modules by walking its folder, but `keras_maskrcnn.export` lives
in the top-level `export/` folder (setup.py's `package_dir`), so plain `lint-imports` would not
see it and would read every `keras_maskrcnn.export...` import as one of `keras_maskrcnn` itself.
This builds the graph of both folders, names `export.*` `keras_maskrcnn.export.*` and points
those imports at their modules; the options and the contracts (`.importlinter`) are
`lint-imports`' own.
"""

import re
import sys

import grimp
from importlinter import cli
from importlinter.adapters.building import GraphBuilder
from importlinter.application.app_config import settings

PACKAGE = "keras_maskrcnn"
EXPORT_FOLDER = "export"
EXPORT = f"{PACKAGE}.{EXPORT_FOLDER}"


def _renamed(module):
    """`export.tflite` → `keras_maskrcnn.export.tflite`; other names unchanged."""
    if module == EXPORT_FOLDER or module.startswith(EXPORT_FOLDER + "."):
        return f"{PACKAGE}.{module}"
    return module


def _export_target(line, modules):
    """The `keras_maskrcnn.export...` module a line imports (grimp reads it as the package)."""
    match = re.search(rf"\b{re.escape(EXPORT)}(\.\w+)?(?: import (\w+))?", line)
    if match is None:
        return None
    target = EXPORT + (match.group(1) or "")
    if match.group(1) is None and match.group(2) and f"{EXPORT}.{match.group(2)}" in modules:
        target = f"{EXPORT}.{match.group(2)}"  # from keras_maskrcnn.export import int8
    return target


class RepositoryGraphBuilder(GraphBuilder):
    """grimp's graph of `keras_maskrcnn/` and `export/` as the one installed package."""

    def build(self, root_package_names, cache_dir, include_external_packages=False,
              exclude_type_checking_imports=False):
        if root_package_names != [PACKAGE]:
            raise ValueError(f"tools/lint_imports.py lints {PACKAGE} only, not {root_package_names}")
        sys.path.insert(0, ".")  # `export` as a top-level folder of the repository
        # With external packages grimp keeps an import of a module it did not find as one of
        # the package; without, it drops it.
        scanned = grimp.build_graph(PACKAGE, EXPORT_FOLDER, cache_dir=cache_dir,
                                    include_external_packages=True,
                                    exclude_type_checking_imports=exclude_type_checking_imports)
        kept = [module for module in scanned.modules
                if include_external_packages or not scanned.is_module_squashed(module)]
        graph = grimp.ImportGraph()
        for module in kept:
            graph.add_module(_renamed(module), is_squashed=scanned.is_module_squashed(module))
        for importer in kept:
            for imported in scanned.find_modules_directly_imported_by(importer):
                if imported not in kept:
                    continue
                for detail in scanned.get_import_details(importer=importer, imported=imported):
                    target = _renamed(imported)
                    if imported == PACKAGE:
                        target = _export_target(detail["line_contents"], graph.modules) or target
                    graph.add_import(importer=_renamed(importer), imported=target,
                                     line_number=detail["line_number"],
                                     line_contents=detail["line_contents"])
        return graph


if __name__ == "__main__":
    settings.configure(GRAPH_BUILDER=RepositoryGraphBuilder())
    cli.lint_imports_command()
