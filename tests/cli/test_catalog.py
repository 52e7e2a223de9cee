"""The command line's static tables equal the library's, and building the parser imports no
torch (``loupe --help`` and argument errors answer at once)."""

from __future__ import annotations

import subprocess
import sys

from loupe.cli import catalog
from loupe.cli.methods import format_table, method_rows


def test_methods_equal_the_registry():
    from loupe.registry import get_method, list_methods

    live = tuple(catalog.MethodRow(n, get_method(n).uses_layer, get_method(n).stochastic,
                                   get_method(n).paper) for n in list_methods())
    replacement = "\n".join(f"    {row!r}," for row in live)
    assert catalog.METHODS == live, (
        "loupe.cli.catalog.METHODS is out of date; replace its rows with:\n" + replacement)
    assert catalog.METHOD_NAMES == tuple(list_methods())


def test_data_kinds_and_synthetic_defaults_equal_the_library():
    from loupe.data.selection import ID_HALVES
    from loupe.data.spec import SPEC_KINDS, SPLIT_KINDS, SyntheticSplits

    assert catalog.SPEC_KINDS == SPEC_KINDS and catalog.SPLIT_KINDS == SPLIT_KINDS
    assert catalog.ID_HALVES == ID_HALVES
    defaults = SyntheticSplits()
    assert (catalog.SYNTHETIC_TRAIN, catalog.SYNTHETIC_VAL, catalog.SYNTHETIC_SIZE,
            catalog.SYNTHETIC_SEED) == (defaults.n_train, defaults.n_val, defaults.size,
                                        defaults.seed)


def test_methods_command_lists_the_registry():
    from loupe.registry import get_method, list_methods

    rows = method_rows()
    assert [r[0] for r in rows] == list_methods()
    assert rows[[r[0] for r in rows].index("shuffle")][1:3] == ("input", "yes")
    assert all(r[3] == get_method(r[0]).paper for r in rows)
    assert format_table(rows).splitlines()[0].split() == ["name", "kind", "stochastic", "paper"]


def test_building_the_parser_imports_no_torch():
    code = ("import sys, loupe.cli; loupe.cli.build_parser(); "
            "heavy = [m for m in ('torch', 'torchvision', 'numpy', 'PIL', 'matplotlib') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_argument_errors_and_methods_import_no_torch():
    # main() itself: a bad value and `loupe methods` end before anything heavy is imported
    code = ("import sys, contextlib, io, loupe.cli\n"
            "with contextlib.redirect_stderr(io.StringIO()):\n"
            "    assert loupe.cli.main(['masks', '--maps', 'm', '--out', 'o', '--threshold',"
            " 'nan']) == 2\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    assert loupe.cli.main(['methods']) == 0\n"
            "assert 'gradcam' in out.getvalue()\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_the_registry_imports_the_named_modules_before_its_first_lookup(tmp_path,
                                                                       monkeypatch):
    # how the package's __init__ keeps the list full without importing torch itself: the
    # registry imports loupe.methods (here a stand-in module) when it is first asked
    from loupe.registry import _Registry

    (tmp_path / "fake_methods.py").write_text(
        "from loupe.registry import MethodSpec\n"
        "import sys\n"
        "REGISTRY = sys.modules['__registry_under_test__']\n"
        "REGISTRY.add(MethodSpec('fake', print, False, False, 'none'))\n"
        "REGISTRY.view()  # a lookup while importing does not recurse\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = _Registry()
    monkeypatch.setitem(sys.modules, "__registry_under_test__", registry)
    registry.load_from("fake_methods")
    registry.load_from("fake_methods")  # named twice, imported once
    assert "fake_methods" not in sys.modules
    assert list(registry.view()) == ["fake"]
    assert list(registry.view()) == ["fake"]
    sys.modules.pop("fake_methods", None)
