"""Which state root a kernel object on the host belongs to.

Several engines may share one host, each with its own state root: a test
session beside a developer's engine, a benchmark beside CI. Links and
nftables tables are host-wide, so every one we make carries its root's
owner id, and an engine removes only what carries its own:

- links (bridges, host-side veths): the interface alias (`ip link` shows
  `alias stack:<id>`), set as each link is made;
- nftables: a table per root, `table ip stack_<id>`;
- iptables accepts in Docker's chains: the comment `stack:<id>:<bridge>`.

The id is derived from the state root's real path, so it needs no file of
its own, survives an engine restart, and anyone holding the path (a test,
an operator) can compute it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

MARK_PREFIX = "stack:"
TABLE_PREFIX = "stack_"


@dataclass(frozen=True)
class Owner:
    id: str  # 10 hex digits: short enough for names and comments, 40 bits against clashes

    @classmethod
    def of(cls, state_root: Path | str) -> Owner:
        path = os.path.realpath(state_root)
        return cls(hashlib.sha256(path.encode()).hexdigest()[:10])

    @property
    def link_alias(self) -> str:
        return MARK_PREFIX + self.id

    @property
    def table(self) -> str:
        return TABLE_PREFIX + self.id

    def rule_comment(self, bridge: str) -> str:
        return f"{MARK_PREFIX}{self.id}:{bridge}"
