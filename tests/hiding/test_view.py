"""MailboxView's bulk operations against its one-at-a-time ones.

Pure (no servers). A SELECT admits a whole mailbox with ``extend`` and a bulk FETCH reads client
numbers from ``client_numbers``; both must say exactly what ``append`` and ``client_seq`` say,
through any mix of appends, extends and expunges.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caliproxy.imap.view import MailboxView

# ("extend", [visible flags]) | ("append", visible) | ("expunge", upstream seq)
_STEP = st.one_of(
    st.tuples(st.just("extend"), st.lists(st.booleans(), max_size=8)),
    st.tuples(st.just("append"), st.booleans()),
    st.tuples(st.just("expunge"), st.integers(1, 12)),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(_STEP, max_size=20), gaps=st.lists(st.integers(1, 3), min_size=200, max_size=200))
def test_bulk_operations_agree_with_single_ones(steps, gaps) -> None:
    bulk, single = MailboxView(), MailboxView()
    next_uid, gap = 0, iter(gaps)

    def new_uid() -> int:
        nonlocal next_uid
        next_uid += next(gap)
        return next_uid

    for kind, arg in steps:
        if kind == "extend":
            uids = [new_uid() for _ in arg]
            bulk.extend(uids, [uid for uid, shown in zip(uids, arg) if shown])
            for uid, shown in zip(uids, arg):
                single.append(uid, shown)
        elif kind == "append":
            uid = new_uid()
            bulk.append(uid, arg)
            single.append(uid, arg)
        elif arg <= len(single.uids):
            assert bulk.expunge_upstream_seq(arg) == single.expunge_upstream_seq(arg)
        assert (bulk.uids, bulk.visible, bulk.hidden) == (single.uids, single.visible, single.hidden)
        assert bulk.client_numbers() == [single.client_seq(uid) for uid in single.uids]


def test_extend_refuses_what_append_would() -> None:
    view = MailboxView([5], [])
    with pytest.raises(ValueError):
        view.extend([5, 6], [6])  # not above the last UID
    with pytest.raises(ValueError):
        view.extend([7, 7], [])  # not ascending
    with pytest.raises(ValueError):
        view.extend([8, 9], [10])  # shown but not among them
    assert (view.uids, view.visible) == ([5], [5])
