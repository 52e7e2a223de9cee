"""The help of every subcommand: real examples at the end (that parse), every option with a
help text that shows its default, no reST markup, one name and one help text per shared flag,
and a top-level description that says what loupe is and lists the commands."""

from __future__ import annotations

import argparse
import shlex
from collections import defaultdict

import pytest

from loupe.cli import SUBCOMMANDS, build_parser
from tests.cli.parsers import subcommand_parsers

# Flags that several commands share with a meaning of their own there (the help says which).
OWN_MEANING = {
    "--out": "what each command writes (a folder, or report's HTML file)",
    "--seed": "the seed of what each command draws (random weights, a training run, the demo)",
    "--size": "explain: the model's input side; maps: the side images are resized to; demo: "
              "its length (default or small)",
    "--names": "evaluate: method names; report: run titles",
    "--reference": "compare: the mIoU row the others are compared with (default: the first "
                   "method, or SPEC+crf); faithfulness: the faithfulness row (default: "
                   "baseline-gaussian when it is a row)",
    "--max-side": "explain: the whole view's longest side (at least 32); maps and compare: the "
                  "cap on an image's longer side for the model (0: no limit)",
    "--model": "explain: a torchvision name; maps: also a training run",
    "--weights": "required for explain, optional for maps (training runs)",
    "--dataset": "the kinds each command opens",
    "--init": "the backbone of a classifier, of a segmenter or of AMN",
    "--backbone": "the backbones each training command builds",
    "--pretrained": "the same choices; train-seg names torchvision's download; train-amn "
                    "also starts from the classifier",
    "--freeze-bn": "train: default on for trained weights; train-seg: off; train-amn: on",
    "--freeze-stem": "train: a ResNet's conv1/bn1/layer1; train-amn: the first conv and BN",
    "--weight-decay": "the optimiser's: SGD's in train and train-seg, Adam's in train-amn",
    "--maps": "masks: one folder; evaluate: several",
    "--masks": "train-seg: pseudo-masks to train on; train-amn: confident labels; evaluate: "
               "masks to score",
    "--topk": "explain: classes per image; maps: instead of the labels",
    "--batch-size": "images per batch; training: per step",
    "--crf": "masks: refine its masks; compare: rows of CRF-refined references",
    "--overlays": "evaluate: images spread over the data set; compare: where methods disagree",
    "--methods": "compare: the baselines are always added; faithfulness: the rows named",
    "--images": "masks: the folder of the images for --crf; faithfulness: the images to score",
}


def help_texts(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Option string -> its formatted help (default appended as --help shows it)."""
    formatter = parser._get_formatter()
    return {action.option_strings[0]: formatter._expand_help(action)
            for action in parser._actions
            if action.option_strings and action.help != argparse.SUPPRESS}


def example_lines(parser: argparse.ArgumentParser) -> list[str]:
    epilog = parser.epilog or ""
    assert epilog.startswith("examples:\n"), epilog
    return [" ".join(line.split()) for line in
            epilog.split("\n", 1)[1].replace("\\\n", " ").splitlines()]


def test_every_command_is_listed_and_described(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "where an image classifier looks" in text and "weakly-supervised" in text
    for command in SUBCOMMANDS:
        # a name longer than the column (faithfulness) has its help on the next line
        assert f"\n    {command} " in text or f"\n    {command}\n" in text, command
    assert "examples:" in text


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_help_ends_with_examples_that_parse(command, tmp_path, monkeypatch):
    parser = subcommand_parsers()[command]
    examples = example_lines(parser)
    assert 2 <= len(examples) <= 3 or command == "methods" and len(examples) == 2
    monkeypatch.chdir(tmp_path)  # relative --out folders of the examples land here
    for line in examples:
        words = shlex.split(line)
        if words[0] == "torchrun":
            words = words[words.index("loupe"):]
        if ">" in words:
            words = words[:words.index(">")]
        assert words[:2] == ["loupe", command], line
        args = build_parser().parse_args(words[1:])
        assert args.command == command
    formatted = parser.format_help()
    assert formatted.rstrip().endswith(parser.epilog.rstrip().splitlines()[-1].strip())


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_every_option_has_help_showing_its_default(command):
    parser = subcommand_parsers()[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        name = (action.option_strings or [action.dest])[0]
        text = parser._get_formatter()._expand_help(action)
        assert text.strip(), f"{command} {name} has no help"
        assert "`" not in text and "``" not in (parser.description or ""), f"{command} {name}"
        default = action.default
        if action.option_strings and default not in (None, False, [], argparse.SUPPRESS) \
                or default == 0 and default is not False and action.option_strings:
            assert "default" in text, f"{command} {name}: default {default!r} not shown"


def test_no_rest_markup_anywhere(capsys):
    for command, parser in subcommand_parsers().items():
        text = parser.format_help()
        assert "``" not in text and ":func:" not in text and ":class:" not in text, command


def test_shared_flags_have_one_name_and_one_help():
    helps: dict[str, dict[str, str]] = defaultdict(dict)
    for command, parser in subcommand_parsers().items():
        for option, text in help_texts(parser).items():
            helps[option][command] = text
    # one name: the label offset is --label-offset everywhere (explain's old name is hidden)
    assert "--labels-offset" not in helps
    assert set(helps["--label-offset"]) == {"explain", "maps", "compare", "faithfulness"}
    assert {"explain", "maps", "compare", "evaluate"} <= set(helps["--class-map"])
    for option in ("--device", "--no-progress", "--workers", "--class-map", "--limit",
                   "--mean", "--std", "--scale", "--method", "--option", "--target-layer"):
        assert len(helps[option]) >= 2, option
    different = {}
    for option, by_command in helps.items():
        if len(by_command) < 2 or option in OWN_MEANING:
            continue
        texts = {t.split(" (default: ")[0].split("; the first OFFSET")[0].split(
            " (default: model.json")[0].split("; every class without")[0]
            for t in by_command.values()}
        if len(texts) > 1:
            different[option] = by_command
    assert not different, different


def test_device_defaults_to_auto_everywhere():
    for command, parser in subcommand_parsers().items():
        for action in parser._actions:
            if "--device" in action.option_strings:
                assert action.default == "auto", command
