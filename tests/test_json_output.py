"""--json output (cli.output.dumps_readable): the same data json.loads gives back, one
finding or record per line."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kohyagen.cli.output import dumps_readable

_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
_tree = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=30,
)


@given(_tree)
def test_round_trips_like_json(value):
    # json.loads of either spelling gives the same document (keys become strings alike)
    assert json.loads(dumps_readable(value)) == json.loads(json.dumps(value))


def test_layout_one_record_per_line():
    data = {
        "root": Path("/data/train"),
        "findings": [{"code": "a", "n": 1}, {"code": "b", "n": [1, 2]}],
        "empty": [],
        "ratio": math.inf,
        "tuple": (1, 2),
    }
    text = dumps_readable(data)
    assert text.splitlines() == [
        "{",
        '  "root": "/data/train",',
        '  "findings": [',
        '    {"code": "a", "n": 1},',
        '    {"code": "b", "n": [1, 2]}',
        "  ],",
        '  "empty": [],',
        '  "ratio": Infinity,',
        '  "tuple": [',
        "    1,",
        "    2",
        "  ]",
        "}",
    ]


def test_non_ascii_stays_readable():
    assert dumps_readable({"name": "фото"}) == '{\n  "name": "фото"\n}'
