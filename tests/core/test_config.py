from dataclasses import dataclass
from typing import Literal, Optional

import pytest

from prunekit import UsageError, describe_options, option, parse_options


@dataclass
class Cfg:
    rate: float = option(0.5, "a rate")
    steps: int = option(10, "how many")
    merge: bool = option(False, "merge pruned units")
    mode: Literal["a", "b"] = option("a", "a mode")
    path: Optional[str] = option(None, "a file")


def test_describe():
    opts = {o.name: o for o in describe_options(Cfg)}
    assert opts["rate"].flag == "--rate" and opts["rate"].default == 0.5 and opts["rate"].help == "a rate"
    assert opts["mode"].choices == ("a", "b")
    assert opts["path"].type == "str?"


def test_parse_forms():
    cfg, rest = parse_options(Cfg, ["--rate", "0.25", "--steps=3", "--merge", "--mode", "b", "pos"])
    assert cfg == Cfg(0.25, 3, True, "b", None) and rest == ["pos"]
    cfg, _ = parse_options(Cfg, ["--no-merge", "--path", "x.json"])
    assert cfg.merge is False and cfg.path == "x.json"


@pytest.mark.parametrize("argv,msg", [(["--rate", "abc"], "expected a number"), (["--steps", "1.5"], "integer"),
                                      (["--mode", "c"], "one of a, b"), (["--bogus", "1"], "unknown option --bogus"),
                                      (["--rate"], "needs a value")])
def test_parse_errors(argv, msg):
    with pytest.raises(UsageError, match=msg):
        parse_options(Cfg, argv)


def test_unknown_left_over_when_allowed():
    cfg, rest = parse_options(Cfg, ["--other", "5", "--rate", "1", "--flag"], allow_unknown=True)
    assert cfg.rate == 1.0 and rest == ["--other", "5", "--flag"]
