"""The mount's exact attributes of files it made under a delegation (fusefs/ownattrs.py):
a change applied here must leave what the meta role's setattr_ leaves, and an entry is
good only under the stamp it was kept with."""

from __future__ import annotations

import random
import stat

from fusefs.ownattrs import OwnAttrs, changed
from storaged.meta import files, namespace, volumes
from storaged.meta.db import open_database, transaction

T = 1_700_000_000_000_000_000


def _random_changes(rng: random.Random) -> dict[str, int]:
    choices = {
        "mode": lambda: rng.choice([stat.S_IFDIR, 0]) | rng.randrange(0o10000),
        "uid": lambda: rng.randrange((1 << 32) - 1),
        "gid": lambda: rng.randrange((1 << 32) - 1),
        "atime_ns": lambda: rng.choice([-1, rng.randrange(-(1 << 62), 1 << 62)]),
        "mtime_ns": lambda: rng.choice([-1, rng.randrange(-(1 << 62), 1 << 62)]),
    }
    keys = rng.sample(sorted(choices), rng.randrange(1, len(choices) + 1))
    return {key: choices[key]() for key in keys}


def test_a_change_applied_here_leaves_what_the_meta_role_leaves() -> None:
    rng = random.Random(7)
    conn = open_database(":memory:")
    with transaction(conn):
        vol = volumes.create(conn, "v", 1 << 30, 2, 1 << 20)
        mine = namespace.make_node(conn, vol["root"], b"f", stat.S_IFREG | 0o644, 1, 2, t=T)
    for step in range(300):
        changes = _random_changes(rng)
        t = T + step + 1
        with transaction(conn):
            theirs = files.setattr_(conn, mine["ino"], changes, t)
        mine = changed(mine, changes, t)
        assert {k: mine[k] for k in theirs} == dict(theirs), (step, changes)


def test_an_entry_is_good_only_under_its_stamp() -> None:
    own = OwnAttrs(limit=3)
    own.keep(1, {"ino": 1, "mode": 0o644}, stamp=5)
    assert own.get(1, 5) == {"ino": 1, "mode": 0o644}
    got = own.get(1, 5)
    assert got is not None
    got["mode"] = 0  # a copy: the kept entry is not changed through it
    assert own.get(1, 5) == {"ino": 1, "mode": 0o644}
    assert own.get(1, 6) is None
    assert own.get(1, 5) is None  # dropped once seen stale
    for ino in (1, 2, 3):
        own.keep(ino, {"ino": ino}, 9)
    own.keep(4, {"ino": 4}, 9)  # full: emptied first
    assert len(own) == 1 and own.get(4, 9) == {"ino": 4}
