"""Every numeric option of every subcommand is checked at parse time: a bad value exits with
status 2 and a message naming the option, before anything is loaded."""

from __future__ import annotations

import argparse

import pytest

from loupe.cli import build_parser
from loupe.cli import values as v
from tests.cli.parsers import subcommand_parsers

# The arguments each subcommand needs to get past "required" (paths need not exist: parsing
# reads none of them; --out lies in pytest's tmp folder).
REQUIRED: dict[str, list[str]] = {
    "methods": [],
    "explain": ["x.jpg", "--model", "resnet18", "--weights", "random"],
    "train": ["--dataset", "synthetic"],
    "maps": ["--dataset", "synthetic", "--model", "run"],
    "masks": ["--maps", "maps"],
    "evaluate": ["--dataset", "synthetic"],
    "compare": ["--dataset", "synthetic", "--model", "run", "--methods", "cam"],
    "report": ["run"],
    "train-seg": ["--dataset", "synthetic", "--masks", "masks"],
    "predict": ["x.jpg", "--checkpoint", "run"],
    "demo": [],
}

# Bad values of each check (the type function or action of an option).
BAD: dict[object, list[str]] = {
    v.positive_int: ["0", "-3", "1.5", "x"],
    v.non_negative_int: ["-1", "2.5", "x"],
    v.positive_float: ["0", "-1", "nan", "inf"],
    v.non_negative_float: ["-0.1", "nan", "inf"],
    v.fraction: ["-0.5", "1.5", "nan", "inf", "x"],
    v.open_fraction: ["0", "1", "nan"],
    v.swept_threshold: ["0.12", "1", "nan"],
    v.device_name: ["gpu", "cuda:x"],
}

# The cases of issue 13, as a user types them.
ISSUE_CASES = [
    ("explain", ["--size", "0"], "--size"),
    ("maps", ["--size", "0"], "--size"),
    ("masks", ["--threshold", "-0.5"], "--threshold"),
    ("masks", ["--threshold", "1.5"], "--threshold"),
    ("masks", ["--threshold", "nan"], "--threshold"),
    ("masks", ["--confident", "0.1", "0.3"], "--confident"),
    ("evaluate", ["--spread-range", "-1", "2"], "--spread-range"),
    ("evaluate", ["--spread-range", "0.6", "0.1"], "--spread-range"),
    ("evaluate", ["--spread-range", "0.3", "0.3"], "--spread-range"),
    ("evaluate", ["--overlays", "-1"], "--overlays"),
    ("evaluate", ["--fixed", "0.12"], "--fixed"),
    ("evaluate", ["--level", "1"], "--level"),
    ("compare", ["--common-threshold", "0.33"], "--common-threshold"),
    ("compare", ["--overlays", "-1"], "--overlays"),
    ("compare", ["--scales", "0"], "--scales"),
    ("train", ["--resize-long", "640", "320"], "--resize-long"),
    ("train", ["--jitter", "0.3", "0.3", "0.3", "0.7"], "--jitter"),
    ("train", ["--lr", "nan"], "--lr"),
    ("demo", ["--threads", "0"], "--threads"),
]


def out_args(command: str, tmp_path) -> list[str]:
    if command == "methods":
        return []
    if command == "report":
        return ["--out", str(tmp_path / "report.html")]
    return ["--out", str(tmp_path / "out")]


def parse(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    return exit_info.value.code, capsys.readouterr().err


def numeric_options() -> list[tuple[str, str, object, int]]:
    """(command, option, check, nargs) of every option that takes a number (or a device)."""
    found = []
    for command, parser in subcommand_parsers().items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or not action.option_strings:
                continue
            check = action.type
            if check in BAD:
                nargs = action.nargs if isinstance(action.nargs, int) else 1
                found.append((command, action.option_strings[0], check, nargs))
    return found


def test_every_numeric_option_has_a_check():
    # A number parsed with bare int/float would accept 0, -1, nan: every option uses a check
    # of loupe.cli.values (or a fixed list of choices).
    loose = [f"{command} {action.option_strings[0]}"
             for command, parser in subcommand_parsers().items() for action in parser._actions
             if action.type in (int, float) and not action.choices]
    assert not loose, loose
    assert len(numeric_options()) >= 60  # the table below really covers the commands


@pytest.mark.parametrize(("command", "option", "check", "nargs"), numeric_options(),
                         ids=lambda x: getattr(x, "__name__", str(x)))
def test_bad_numbers_exit_2_naming_the_option(command, option, check, nargs, capsys, tmp_path):
    good = {v.device_name: "cpu", v.swept_threshold: "0.1", v.fraction: "0.5",
            v.open_fraction: "0.5"}.get(check, "1")
    for bad in BAD[check]:
        values = [good] * (nargs - 1) + [bad]
        code, err = parse([command, *REQUIRED[command], *out_args(command, tmp_path), option,
                           *values], capsys)
        assert code == 2, (option, bad)
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"loupe {command}: error: argument {option}"), last
        assert repr(bad) in last or bad in last


@pytest.mark.parametrize(("command", "argv", "option"), ISSUE_CASES,
                         ids=[" ".join([c, *a]) for c, a, _ in ISSUE_CASES])
def test_issue_cases_are_refused_at_parse_time(command, argv, option, capsys, tmp_path):
    code, err = parse([command, *REQUIRED[command], *out_args(command, tmp_path), *argv], capsys)
    assert code == 2
    assert f"argument {option}" in err.strip().splitlines()[-1]


def test_good_values_parse(tmp_path):
    args = build_parser().parse_args([
        "evaluate", "--dataset", "synthetic", "--out", str(tmp_path), "--spread-range", "0",
        "1", "--fixed", "0.15", "0.95", "--overlays", "0", "--level", "0.9", "--device",
        "cuda:1",
    ])
    assert args.spread_range == [0.0, 1.0] and args.fixed == [0.15, 0.95]
    assert args.overlays == 0 and args.level == 0.9 and args.device == "cuda:1"
    args = build_parser().parse_args(["masks", "--maps", "m", "--out", str(tmp_path),
                                      "--threshold", "0", "--confident", "0.3", "0.3"])
    assert args.threshold == 0.0 and args.confident == [0.3, 0.3]
    args = build_parser().parse_args(["train", "--dataset", "synthetic", "--out",
                                      str(tmp_path), "--resize-long", "64", "64"])
    assert args.resize_long == [64, 64]


def test_swept_thresholds_are_the_librarys():
    from loupe.metrics import default_thresholds

    assert v.SWEPT_THRESHOLDS == tuple(round(t, 6) for t in default_thresholds().tolist())


@pytest.mark.parametrize("command", [c for c in REQUIRED if c != "methods"])
def test_out_that_is_a_file_is_refused(command, tmp_path, capsys):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    bad = [afile, afile / "inside"] if command != "report" else [tmp_path, afile / "x.html"]
    for out in bad:
        code, err = parse([command, *REQUIRED[command], "--out", str(out)], capsys)
        line = err.strip().splitlines()[-1]
        assert code == 2 and "argument --out" in line, line
        assert ("is a file, not a folder" in line) or ("is a folder; name the file" in line)
