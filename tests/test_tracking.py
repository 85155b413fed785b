"""zkv.store.tracking: the keys the frontend's read cache may hold, and its invalidations."""

from __future__ import annotations

from zkv.store.tracking import INVALIDATE_MAX_KEYS, TRACK_EVICT, Tracking


def test_a_replicated_change_names_a_tracked_key_once() -> None:
    t = Tracking(100)
    t.keys.update({b"a", b"b"})
    t.note_changes([(1, b"a", b"x"), (2, b"c", b"y"), (3, b"a", None)])
    assert t.pending and t.take() == [b"a"]  # once, and not c (never read)
    assert t.keys == {b"b"} and not t.pending
    t.note_changes([(4, b"a", b"z")])  # not tracked any more until read again
    assert not t.pending


def test_a_bulk_change_forgets_everything() -> None:
    t = Tracking(100)
    t.keys.add(b"a")
    t.forget()
    assert t.take() is None and t.keys == set()


def test_many_changes_at_once_become_forget_everything() -> None:
    t = Tracking(10 * INVALIDATE_MAX_KEYS)
    t.keys.update(b"k%d" % i for i in range(INVALIDATE_MAX_KEYS + 1))
    t.note_changes((i, b"k%d" % i, b"v") for i in range(INVALIDATE_MAX_KEYS + 1))
    assert t.take() is None


def test_past_the_bound_some_keys_are_untracked_and_named() -> None:
    t = Tracking(2000)
    t.keys.update(b"k%d" % i for i in range(2100))
    t.bound()
    named = t.take()
    assert named is not None and len(named) == 100 + TRACK_EVICT
    assert len(t.keys) == 2100 - len(named) and not (set(named) & t.keys)  # named: untracked
    small = Tracking(5)
    small.keys.update(b"k%d" % i for i in range(8))
    small.bound()  # more to evict than there are keys: all go, nothing breaks
    assert small.keys == set() and len(small.take() or []) == 8
