"""fastnn.data's argument checks: flags, fractions and seeds named in clear errors."""

import numpy as np
import pytest

from fastnn import data, memory

X = np.arange(20, dtype=np.float32).reshape(10, 2)
y = np.arange(10) % 2


@pytest.mark.parametrize("call,error,message", [
    (lambda: data.batches(X, y, 5, shuffle="no"), TypeError, "batches: shuffle must be True or False; got str 'no'"),
    (lambda: data.batches(X, y, 5, reuse_buffers=1), TypeError, "batches: reuse_buffers must be True or False"),
    (lambda: data.train_val_split(X, y, shuffle="False"), TypeError, "train_val_split: shuffle must be True or False"),
    (lambda: data.train_val_split(X, y, stratify="yes"), TypeError, "train_val_split: stratify must be True or False"),
    (lambda: data.train_val_split(X, y, "0.2"), TypeError, "train_val_split: val_fraction must be a number; got '0.2'"),
    (lambda: data.train_val_split(X, y, float("nan")), ValueError, r"val_fraction must be in \(0, 1\); got nan"),
    (lambda: data.batches(X, y, 5, shuffle=False, seed=-1), ValueError, "batches: seed must be an integer >= 0"),
    (lambda: data.batches(X, y, 5, shuffle=False, seed=1.0), TypeError, "batches: seed must be an integer >= 0"),
    (lambda: data.train_val_split(X, y, shuffle=False, seed=-1), ValueError, "train_val_split: seed must be"),
])
def test_arguments_are_checked(call, error, message):
    """Found by an attack: shuffle="no" and shuffle="False" were truthy (and shuffled),
    stratify="yes" was taken, "0.2" failed in a comparison naming nothing, and a seed was
    taken unchecked where shuffle=False left it unused."""
    with pytest.raises(error, match=message):
        call()


def test_flags_of_numpy_and_seed_objects_are_still_taken():
    order = [yb.tolist() for _, yb in data.batches(X, y, 5, shuffle=np.False_, seed=np.int64(3))]
    assert order == [[0, 1, 0, 1, 0], [1, 0, 1, 0, 1]]
    parts = data.train_val_split(X, y, 0.2, shuffle=np.True_, stratify=np.True_,
                                 seed=np.random.default_rng(0))
    assert len(parts[2]) == 2 and sorted(parts[3].tolist()) == [0, 1]


# ------------------------------------------------ fastnn.memory: arguments named, not NumPy's words

@pytest.mark.parametrize("call,error,message", [
    (lambda: memory.empty(3.0), TypeError, "shape must be an integer or a tuple of integers; got float 3.0"),
    (lambda: memory.empty(2**62), ValueError, r"shape \(4611686018427387904,\) of float32 needs .* more than an array can hold"),
    (lambda: memory.zeros((2**40, 2**40)), ValueError, "more than an array can hold"),
    (lambda: memory.is_aligned([1, 2]), TypeError, r"memory.is_aligned: a must be a NumPy array or a fastnn.Tensor; got list \[1, 2\]"),
    (lambda: memory.owner([1]), TypeError, "memory.owner: a must be a NumPy array"),
    (lambda: memory.empty_like([1, 2]), TypeError, "memory.empty_like: a must be a NumPy array"),
    (lambda: memory.zeros_like([1]), TypeError, "memory.zeros_like: a must be a NumPy array"),
])
def test_memory_functions_name_their_bad_arguments(call, error, message):
    """Found by an attack: tuple(3.0)'s TypeError, NumPy's "Maximum allowed dimension
    exceeded", and AttributeErrors on a list."""
    with pytest.raises(error, match=message):
        call()


def test_memory_still_takes_numpy_integers_and_shapes():
    assert memory.empty(np.int64(3)).shape == (3,)
    assert memory.zeros([2, np.int32(3)]).shape == (2, 3)
    assert memory.empty_like(memory.empty((2, 2))).shape == (2, 2)


# ------------------------------------------------ fastnn.plot: nothing to draw, or names too few

def _plot_calls():
    from fastnn import plot

    none = np.zeros((0, 4))
    labels = np.array([0, 1, 5])
    return [
        (lambda: plot.filters(np.zeros((0, 1, 3, 3))), "filters: the weight holds no filters"),
        (lambda: plot.feature_maps(np.zeros((0, 3, 3))), "feature_maps: no channels to draw"),
        (lambda: plot.sample_images(none, none[:, 0], none[:, 0], None, (2, 2)),
         "sample_images: nothing to draw: 0 images"),
        (lambda: plot.sample_images(np.zeros((3, 4)), labels, labels, None, (2, 2), classes=["a", "b"]),
         r"sample_images: classes holds 2 names; the labels need 6 \(0 .. 5\)"),
        (lambda: plot.training_curves({}), "training_curves: the history has no 'loss' or 'accuracy'"),
        (lambda: plot.confusion_matrix(np.zeros((3, 5), int)),
         r"confusion_matrix: matrix must be square .*got shape \(3, 5\)"),
        (lambda: plot.confusion_matrix(np.eye(3, dtype=int), classes=["a"]),
         "confusion_matrix: classes holds 1 names; the labels need 3"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_plots_name_what_they_cannot_draw(case):
    """Found by an attack: 0 images were a ZeroDivisionError, {} matplotlib's error, a short
    classes= list an IndexError, and a (3, 5) matrix was drawn as a 3 x 3 grid silently."""
    pytest.importorskip("matplotlib")
    call, message = _plot_calls()[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_plots_take_all_of_a_sets_class_names(tmp_path):
    pytest.importorskip("matplotlib")
    from fastnn import plot

    assert plot.confusion_matrix(np.eye(3, dtype=int), classes=list("abcdef")) is not None
    # "figs/" is a folder (Path() drops the separator: it had been written as figs.png)
    with pytest.raises(ValueError, match="figs/ is a folder; give a file name"):
        plot.training_curves({"loss": [1.0, 0.5]}, str(tmp_path / "figs") + "/")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------ fastnn.tuning: shapes from NumPy

def test_tune_takes_numpy_ints_and_bools_in_shapes():
    """Found by an attack: tune(shapes=[(np.int64(8), 8, 8)]) was refused (a shape taken
    from an array's). They are stored as Python's (the file is JSON)."""
    from fastnn import tuning

    work = tuning._shapes([(np.int64(8), 8, 8), (8, np.int32(4), 2, np.True_, False)])
    assert work == [(8, 8, 8, False, False), (8, 4, 2, True, False)]
    assert all(type(v) in (int, bool) for s in work for v in s)
    for bad in [(True, 8, 8), (8.0, 8, 8), (np.int64(0), 8, 8), (8, 8, 8, 1, 0)]:
        with pytest.raises(ValueError, match="tune: shapes must hold"):
            tuning._shapes([bad])


def test_no_samples_in_one_batch_of_all_is_no_batch():
    """Found by an attack: batch_size=None on empty data raised range()'s 'arg 3 must not
    be zero' from inside the library (batch_size=3 gave no batch)."""
    X, y = np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
    for shuffle in (False, True):
        assert list(data.batches(X, y, batch_size=None, shuffle=shuffle)) == []
        assert list(data.batches(X, y, batch_size=3, shuffle=shuffle)) == []
