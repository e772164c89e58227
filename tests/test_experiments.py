"""experiments.compare and lr_range_test, and the PNG files of fastnn.plot."""

import re
import threading
import types

import numpy as np
import pytest

import fastnn
from fastnn import experiments, nn, optim
from fastnn.diagnostics import gradient_check
from fastnn.nn.module import run_lock

pytest.importorskip("matplotlib")
from fastnn import plot  # noqa: E402


@pytest.fixture(scope="module")
def digits_split():
    return fastnn.datasets.load("digits", validation=0.2)[:4]


def _builder(record=None):
    def build():
        model = nn.Sequential(nn.Dense(64, 32, activation="relu"), nn.Dense(32, 10))
        if record is not None:
            record.append([p.data.copy() for p in model.parameters()])
        return model
    return build


def test_every_run_starts_from_the_same_weights(digits_split):
    initial = []
    experiments.compare(_builder(initial), digits_split, optimizers=["sgd", "adam"],
                        lrs=[0.1, 0.01], epochs=1, verbose=False)
    assert len(initial) == 4
    for weights in initial[1:]:
        for a, b in zip(initial[0], weights):
            np.testing.assert_array_equal(a, b)


def test_same_seed_same_results_and_settings_differ(digits_split):
    kw = dict(optimizers=["momentum", "adam"], lrs=[0.05], epochs=2, verbose=False, seed=5)
    first = experiments.compare(_builder(), digits_split, **kw)
    second = experiments.compare(_builder(), digits_split, **kw)
    for a, b in zip(first.runs, second.runs):
        assert a.history.history["loss"] == b.history.history["loss"]
        assert a.history.history["val_accuracy"] == b.history.history["val_accuracy"]
    assert first.runs[0].history.history["loss"] != first.runs[1].history.history["loss"]
    table = first.table()
    assert "momentum" in table and "adam" in table and "val acc" in table


def test_diverging_run_is_reported_not_raised():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32) * 10
    y = X @ rng.standard_normal((4, 1)).astype(np.float32)
    build = lambda: nn.Sequential(nn.Dense(4, 8, activation="relu"), nn.Dense(8, 1))  # noqa: E731
    result = experiments.compare(build, (X, y, X, y), optimizers=["sgd"], lrs=[1e-3, 50.0],
                                 epochs=5, loss="mse", verbose=False)
    ok, diverged = result.runs
    assert not ok.diverged and diverged.diverged
    assert "diverged" in result.table()


def test_a_run_whose_last_step_blew_the_weights_up_is_diverged_not_chance():
    """Full batch: an epoch is one step, its loss taken before the step, so the logged loss
    stays finite while fit stops on the NaN/Inf weights that step left (found by an attack:
    reported as "chance")."""
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((60, 5)) * 100).astype(np.float32)
    y = rng.integers(0, 3, 60)
    build = lambda: nn.Sequential(nn.Dense(5, 16, activation="relu"), nn.Dense(16, 3))  # noqa: E731
    result = experiments.compare(build, (X, y, X[:20], y[:20]), optimizers=["sgd"], lrs=[3e38],
                                 batch_sizes=[None], epochs=3, verbose=False)
    (run,) = result.runs
    assert all(np.isfinite(run.history.history["loss"]))
    assert run.history.stop_reason is not None
    assert run.diverged and run.status == "diverged"
    assert "diverged" in result.table()


def test_target_epoch(digits_split):
    result = experiments.compare(_builder(), digits_split, optimizers=["adam"], lrs=[0.01],
                                 epochs=4, target_accuracy=0.5, verbose=False)
    run = result.runs[0]
    accs = run.history.history["val_accuracy"]
    expected = next(i + 1 for i, a in enumerate(accs) if a >= 0.5)
    assert run.epoch_reached_target == expected
    assert run.best_val_accuracy == max(accs) and run.final_val_accuracy == accs[-1]


def test_lr_range_test_restores_weights(digits_split):
    model = _builder()()
    before = [p.data.copy() for p in model.parameters()]
    result = experiments.lr_range_test(model, digits_split, steps=60, start_lr=1e-5, end_lr=1e4)
    for p, w in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, w)
    assert np.all(np.diff(result.lrs) > 0) and result.lrs[0] == pytest.approx(1e-5)
    assert len(result.lrs) < 60  # the loss blew up before lr reached 1e4
    assert 1e-5 <= result.suggested_lr <= 1e4
    # the suggestion lies where the loss was falling, before its minimum
    assert result.suggested_lr <= result.lrs[int(np.argmin(result.losses))]


def test_lr_range_test_records_the_loss_with_the_penalties_as_fit_does():
    """Found by an attack: the curve left the L1/L2 penalties out while the steps descended
    the loss with them (fit and evaluate report it with them)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((96, 6)).astype(np.float32), rng.integers(0, 3, 96)
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(6, 16, activation="relu", l2=1.0), nn.Dense(16, 3, l1=0.1))
    model.compile(loss="cross_entropy", optimizer="sgd")
    expected = model.evaluate(X, y, batch_size=96)["loss"]
    assert model.regularization_loss() > 0.5 * expected   # the penalties weigh here
    result = experiments.lr_range_test(model, (X, y), steps=5, batch_size=96, start_lr=1e-9,
                                       end_lr=1e-8)
    assert result.losses[0] == pytest.approx(expected, rel=1e-5)   # the first: one batch, debiased


def test_lr_range_test_leaves_a_compiled_model_trainable(digits_split):
    """The test trains through an optimizer of its own; the compiled one keeps its buffer
    (the next fit raised, or left layers untrained), and the next fit moves the weights."""
    model = _builder()()
    model.compile(loss="cross_entropy", optimizer="sgd")
    views = [p.data for p in model.parameters()]
    before = [v.copy() for v in views]
    experiments.lr_range_test(model, digits_split, steps=10, end_lr=1e3)
    assert all(p.data is v for p, v in zip(model.parameters(), views))
    model.fit(*digits_split[:2], epochs=1, verbose=0)
    assert all(not np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("kw,message", [
    (dict(steps=1), "steps must be an integer >= 2; got 1"),
    (dict(steps=2.5), "steps must be an integer >= 2"),
    (dict(start_lr=1.0, end_lr=0.1), "needs 0 < start_lr < end_lr; got start_lr=1, end_lr=0.1"),
    (dict(start_lr=0.0), "needs 0 < start_lr"),
    (dict(end_lr=float("nan")), "end_lr must be finite"),
    (dict(smoothing=1.0), r"smoothing must be in \[0.0, 1.0\)")])
def test_lr_range_test_checks_its_arguments(digits_split, kw, message):
    with pytest.raises(ValueError, match=message):
        experiments.lr_range_test(_builder()(), digits_split, **kw)


def test_lr_range_test_says_when_the_loss_never_bottomed_out(digits_split):
    """A range too low to see the minimum (whole-data batches: the loss falls step by step):
    a warning, and a suggestion inside the range."""
    with pytest.warns(UserWarning, match="still falling at end_lr=0.01.*lower bound"):
        result = experiments.lr_range_test(_builder()(), digits_split, steps=8, start_lr=1e-3,
                                           end_lr=1e-2, batch_size=len(digits_split[0]))
    assert 1e-3 <= result.suggested_lr <= 1e-2


def _is_png(figure):
    """The Figure that a plot function returned was written as a PNG file, at its path."""
    data = figure.path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_plots_write_png_files(tmp_path, digits_split):
    X_tr, y_tr, X_val, y_val = digits_split
    model = _builder()()
    model.compile(loss="cross_entropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X_tr, y_tr, epochs=2, validation_data=(X_val, y_val), verbose=0)
    pred = model.predict(X_val).argmax(1)
    cm = np.zeros((10, 10), int)
    np.add.at(cm, (y_val, pred), 1)
    cmp = experiments.compare(_builder(), digits_split, optimizers=["sgd"], lrs=[0.1], epochs=1,
                              verbose=False)
    lr = experiments.lr_range_test(_builder()(), digits_split, steps=20)
    paths = [plot.training_curves(history, tmp_path / "curves.png"),
             plot.comparison(cmp, tmp_path / "cmp.png"),
             plot.lr_range(lr, tmp_path / "lr.png"),
             plot.confusion_matrix(cm, tmp_path / "cm.png"),
             plot.sample_images(X_val, y_val, pred, tmp_path / "samples.png", (8, 8))]
    for path in paths:
        assert _is_png(path), path


def test_plots_of_one_epoch_colour_images_scores_and_a_misspelt_metric(tmp_path):
    """Found by an attack: a one-epoch history drew nothing but the legend; sample_images
    raised matplotlib's TypeError on (3, 32, 32) images (as load("cifar10") gives them) and
    an unrelated TypeError on predict's score rows; gradient_flow wrote an empty figure for a
    metric no layer had recorded."""
    import types
    one = types.SimpleNamespace(history={"loss": [2.3], "val_loss": [2.2], "accuracy": [0.1]})
    fig = plot.training_curves(one, tmp_path / "one.png")
    for ax in fig.axes:
        assert all(line.get_marker() == "o" for line in ax.get_lines())
        assert list(ax.get_xticks()) == [1]
    red = np.zeros((2, 3, 4, 5), np.float32)
    red[:, 0] = 1.0                                     # channel 0: red
    scores = np.array([[0.1, 0.9], [0.8, 0.2]])
    fig = plot.sample_images(red.reshape(2, -1), np.array([1, 1]), scores, tmp_path / "s.png",
                             (3, 4, 5))
    first = fig.axes[0]
    np.testing.assert_array_equal(first.get_images()[0].get_array()[0, 0], [1.0, 0.0, 0.0])
    assert first.get_title().startswith("1\n") and fig.axes[1].get_title().startswith("0\n")
    # a column of labels, and one of probabilities, as the metrics read them (a first fix
    # took the argmax of every 2-D array: all 0, found by a review)
    fig = plot.sample_images(red.reshape(2, -1), np.array([[3], [1]]), np.array([[0.9], [0.2]]),
                             tmp_path / "c.png", (3, 4, 5))
    assert [ax.get_title() for ax in fig.axes[:2]] == ["1\n(true 3)", "0\n(true 1)"]
    history = types.SimpleNamespace(diagnostics={"0:Dense": {"grad_norm": [1.0, 0.5]}})
    with pytest.raises(ValueError, match=r"no layer recorded 'grad_norms'; recorded: \['grad_norm'\]"):
        plot.gradient_flow(history, tmp_path / "g.png", metric="grad_norms")
    assert not (tmp_path / "g.png").exists()


def _fake_comparison(runs):
    history = lambda k: types.SimpleNamespace(history={  # noqa: E731
        "loss": [1.0 / (k + 1), 0.5 / (k + 1)], "val_accuracy": [0.1 + k / 20, 0.2 + k / 20]})
    return experiments.Comparison(runs=[
        experiments.Run("sgd", 0.1 / (k + 1), 32, history(k), 0.1, False, 0.2, 0.2, 0.5, None)
        for k in range(runs)])


def test_comparison_figure_tells_twelve_runs_apart_legend_outside_the_axes(tmp_path):
    fig = plot.comparison(_fake_comparison(12), tmp_path / "c.png")
    from matplotlib.colors import to_hex
    for ax in fig.axes:
        styles = {(to_hex(line.get_color()), line.get_linestyle()) for line in ax.get_lines()}
        assert len(ax.get_lines()) == 12 and len(styles) == 12
    legend, = fig.legends
    assert len(legend.get_texts()) == 12
    fig.draw_without_rendering()
    box = legend.get_window_extent()
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent()), "the legend covers the curves"


def test_every_plot_returns_a_titled_figure_and_writes_its_file(tmp_path):
    from matplotlib.figure import Figure

    X, y, _, _ = fastnn.datasets.load("xor")
    model = nn.Sequential(nn.Dense(2, 4, activation="tanh"), nn.Dense(4, 2))
    model.compile(loss="cross_entropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X, y, epochs=2, validation_data=(X, y), verbose=0, diagnostics=True)
    rng = np.random.default_rng(0)
    lr = experiments.LRRangeResult(np.geomspace(1e-4, 1, 8), np.linspace(2, 1, 8), 1e-2)
    figures = {
        "training_curves": lambda p: plot.training_curves(history, p),
        "comparison": lambda p: plot.comparison(_fake_comparison(2), p),
        "lr_range": lambda p: plot.lr_range(lr, p),
        "gradient_flow": lambda p: plot.gradient_flow(history, p),
        "confusion_matrix": lambda p: plot.confusion_matrix(np.eye(3, dtype=int), p),
        "sample_images": lambda p: plot.sample_images(rng.random((4, 64)), y, y, p, (8, 8)),
        "filters": lambda p: plot.filters(rng.standard_normal((4, 1, 3, 3)), p),
        "feature_maps": lambda p: plot.feature_maps(rng.random((3, 5, 5)), p),
    }
    public = {name for name, f in vars(plot).items() if not name.startswith("_")
              and callable(f) and f.__module__ == plot.__name__}
    assert public == set(figures)
    for name, draw in figures.items():
        fig = draw(tmp_path / f"{name}.png")
        assert isinstance(fig, Figure), name
        assert fig.get_suptitle().strip(), f"{name}: no title"
        assert fig.path == tmp_path / f"{name}.png" and _is_png(fig), name
        assert draw(None).path is None   # a figure for a notebook, no file
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.png" for n in figures)
    assert "gradient flow" in plot.gradient_flow(history).get_suptitle()


def test_gradient_flow_needs_diagnostics(tmp_path):
    class NoDiagnostics:
        history = {"loss": [1.0]}
    with pytest.raises(ValueError, match="diagnostics=True"):
        plot.gradient_flow(NoDiagnostics(), tmp_path / "g.png")


def test_history_plot(tmp_path, digits_split):
    X_tr, y_tr, X_val, y_val = digits_split
    model = _builder()()
    model.compile(loss="cross_entropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X_tr, y_tr, epochs=2, validation_data=(X_val, y_val), verbose=0)
    assert _is_png(history.plot(tmp_path / "curves.png"))


def test_compare_takes_optimizer_objects_each_run_a_fresh_copy(digits_split):
    adam = fastnn.optim.Adam(lr=3e-4)
    result = experiments.compare(_builder(), digits_split, optimizers=["sgd", adam], epochs=1,
                                 verbose=True)
    sgd_run, adam_run = result.runs
    assert sgd_run.label == "sgd lr=0.01 bs=32" and adam_run.label == "Adam lr=0.0003 bs=32"
    assert adam_run.history.history["lr"] == [3e-4]
    assert adam.step_count == 0 and not adam.params  # the object given is left untouched
    assert "Adam" in result.table()


def test_compare_takes_per_optimizer_settings_each_list_a_grid_of_its_own(digits_split):
    models = []

    def build():
        models.append(_builder()())
        return models[-1]

    result = experiments.compare(
        build, digits_split, epochs=1, verbose=False,
        optimizers={"sgd": {"lr": [0.1, 0.01], "momentum": 0.9},
                    "adam": {"lr": [1e-3], "betas": (0.8, 0.99)}})   # a tuple is one value
    assert [r.label for r in result.runs] == ["sgd momentum=0.9 lr=0.1 bs=32",
                                              "sgd momentum=0.9 lr=0.01 bs=32",
                                              "adam betas=(0.8, 0.99) lr=0.001 bs=32"]
    used = [m.compiled.optimizer for m in models]
    assert [type(o).__name__ for o in used] == ["SGD", "SGD", "Adam"]
    assert [o.lr for o in used] == [0.1, 0.01, 1e-3] and used[0].momentum == 0.9
    assert tuple(used[2].betas) == (0.8, 0.99)
    assert [r.history.history["lr"] for r in result.runs] == [[0.1], [0.01], [1e-3]]
    assert "sgd momentum=0.9" in result.table()


def test_compare_settings_errors_name_the_entry(digits_split):
    with pytest.raises(ValueError, match=r"optimizers\['sgd'\].*lr.*lrs"):
        experiments.compare(_builder(), digits_split, optimizers={"sgd": {"lr": [0.1]}},
                            lrs=[0.01], verbose=False)
    with pytest.raises(ValueError, match=r"optimizers\['sgd'\].*momentun"):  # before training
        experiments.compare(lambda: pytest.fail("trained"), digits_split, verbose=False,
                            optimizers={"sgd": {"momentun": 0.9}})


def test_compare_says_when_lrs_replace_an_optimizer_objects_own_lr(digits_split):
    adam, models = fastnn.optim.Adam(lr=3e-4, betas=(0.8, 0.99)), []

    def build():
        models.append(_builder()())
        return models[-1]

    with pytest.warns(UserWarning, match=r"lrs=\[0.01\] replaces the lr=0.0003 of "
                                         r"optimizers\[0\] \(Adam\); its other settings"):
        result = experiments.compare(build, digits_split, optimizers=[adam], lrs=[0.01],
                                     epochs=1, verbose=False)
    assert result.runs[0].history.history["lr"] == [0.01] and adam.lr == 3e-4
    assert tuple(models[0].compiled.optimizer.betas) == (0.8, 0.99)


def test_compare_marks_runs_stuck_at_chance(digits_split):
    def constant():  # every output equal: it predicts one class, whatever the input
        model = _builder()()
        for p in model.parameters():
            p.data[...] = 0.0
        return model

    stuck = experiments.compare(constant, digits_split, optimizers=["sgd"], lrs=[1e-9],
                                epochs=1, verbose=False)
    learnt = experiments.compare(_builder(), digits_split, optimizers=["adam"], lrs=[0.01],
                                 epochs=2, verbose=False)
    y_val = digits_split[3]
    guess = max(0.1, np.bincount(y_val).max() / len(y_val))
    assert stuck.runs[0].final_val_accuracy <= guess + 0.02   # the premise
    assert stuck.runs[0].at_chance and stuck.runs[0].status == "chance"
    assert stuck.table().splitlines()[2].endswith("chance")
    assert learnt.runs[0].final_val_accuracy > 0.5 and not learnt.runs[0].at_chance
    assert learnt.table().splitlines()[2].endswith("ok")


def test_compare_table_headers_and_progress_lines(digits_split, capsys):
    result = experiments.compare(_builder(), digits_split, optimizers=["adam"], lrs=[0.01],
                                 epochs=1, verbose=True)
    out = capsys.readouterr().out
    start, line = out.splitlines()[:2]
    assert start == "run 1/1: adam lr=0.01 bs=32"  # as it starts: a CNN's run is long
    accuracy = result.runs[0].final_val_accuracy
    assert line.startswith(f"adam lr=0.01 bs=32: validation accuracy {accuracy:.4f}, ok, "), line
    header = result.table().splitlines()[0]
    assert "@" not in header and "epoch" not in header   # no target, no target column
    assert header.split() == ["optimizer", "lr", "batch", "val", "acc", "best", "val",
                              "train", "loss", "time", "status"]
    result.target_accuracy = 0.5
    assert "epoch>=50%" in result.table().splitlines()[0]
    result.target_accuracy = 0.955  # as given: it had read 96%, above what its epoch reached
    assert "epoch>=95.5%" in result.table().splitlines()[0]


def test_a_failing_report_never_loses_the_runs(digits_split, monkeypatch, tmp_path):
    def broken(comparison, path):
        raise OSError("disk full")

    monkeypatch.setattr(plot, "comparison", broken)
    with pytest.warns(RuntimeWarning, match="report failed.*disk full.*2 finished runs"):
        result = experiments.compare(_builder(), digits_split, optimizers=["sgd", "adam"],
                                     epochs=1, verbose=False, plot=str(tmp_path / "c.png"))
    assert [r.optimizer for r in result.runs] == ["sgd", "adam"]


def _cnn():
    return nn.Sequential(nn.Reshape((1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1, bias=False),
                         nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dense(64, 10))


def test_compare_and_lr_range_test_take_a_cnn(digits_split):
    X_train, y_train, X_val, y_val = digits_split
    result = experiments.compare(_cnn, digits_split, optimizers=["sgd", "adam"], lrs=[0.01],
                                 epochs=2, verbose=False)
    assert [run.diverged for run in result.runs] == [False, False]
    assert result.runs[1].final_val_accuracy > 0.5, result.runs[1].history.history
    model = _cnn()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    lr = experiments.lr_range_test(model, digits_split, steps=30)
    assert 1e-6 < lr.suggested_lr < 1.0 and len(lr.lrs) == len(lr.losses) > 10
    for name, value in model.state_dict().items():    # running statistics too
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_filter_and_feature_map_figures(tmp_path):
    rng = np.random.default_rng(0)
    for shape in ((6, 1, 5, 5), (4, 3, 3, 3), (8, 16, 3, 3)):     # grey, colour, mean of channels
        path = plot.filters(rng.standard_normal(shape), tmp_path / f"f{shape[1]}.png", title="t")
        assert _is_png(path)
    assert _is_png(plot.feature_maps(rng.random((5, 7, 9)), tmp_path / "m.png",
                                     image=rng.random((1, 7, 9))))
    with pytest.raises(ValueError, match=r"Conv2d weight of shape \(out, in, kh, kw\); got shape \(6, 25\)"):
        plot.filters(np.zeros((6, 25)), tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"shape \(channels, height, width\); got shape \(2, 5, 7, 9\)"):
        plot.feature_maps(np.zeros((2, 5, 7, 9)), tmp_path / "bad.png")


def test_compare_tells_optimizer_objects_of_one_class_apart(digits_split):
    plain, heavy = fastnn.optim.SGD(lr=0.1), fastnn.optim.SGD(lr=0.1, momentum=0.9)
    result = experiments.compare(_builder(), digits_split, optimizers=[plain, heavy],
                                 epochs=1, verbose=False)
    # The settings that differ from the class's defaults are shown, as in the dict form.
    assert [r.label for r in result.runs] == ["SGD lr=0.1 bs=32",
                                              "SGD momentum=0.9 lr=0.1 bs=32"]


def test_compare_refuses_settings_that_give_no_runs_or_no_grid(digits_split):
    never = lambda: pytest.fail("trained")  # noqa: E731 - every check comes before training
    for kwargs in (dict(optimizers=[]), dict(optimizers={"sgd": {"lr": []}}),
                   dict(optimizers=["sgd"], lrs=[]), dict(optimizers=["sgd"], batch_sizes=[])):
        with pytest.raises(ValueError, match="no run"):
            experiments.compare(never, digits_split, verbose=False, **kwargs)
    with pytest.raises(TypeError, match=r"lrs must be a list.*got 0\.01"):
        experiments.compare(never, digits_split, optimizers=["sgd"], lrs=0.01, verbose=False)
    with pytest.raises(TypeError, match=r"batch_sizes must be a list.*got 32"):
        experiments.compare(never, digits_split, optimizers=["sgd"], batch_sizes=32,
                            verbose=False)
    # A tuple is one value (Adam's betas): a tuple of rates is told to be a list.
    with pytest.raises(ValueError, match=r"optimizers\['sgd'\]: lr must be a number; "
                                         r"got \(0\.1, 0\.01\)"):
        experiments.compare(never, digits_split, verbose=False,
                            optimizers={"sgd": {"lr": (0.1, 0.01)}})


def test_comparison_figure_tells_fifty_runs_apart():
    # 5 optimizers x 5 rates x 2 batch sizes: no two runs may share a colour and a style.
    fig = plot.comparison(_fake_comparison(50), None)
    from matplotlib.colors import to_hex
    for ax in fig.axes:
        styles = {(to_hex(line.get_color()), line.get_linestyle()) for line in ax.get_lines()}
        assert len(ax.get_lines()) == 50 and len(styles) == 50


def test_data_without_validation_arrays_is_an_error_that_says_what_to_pass(digits_split):
    X, y = digits_split[:2]
    with pytest.raises(ValueError, match=r"compare: data must be \(X_train, y_train, X_val, "
                                         r"y_val\).*a tuple of 2"):
        experiments.compare(_builder(), (X, y), verbose=False)
    with pytest.raises(ValueError, match=r"lr_range_test: data must be \(X_train, y_train"
                                         r".*ndarray"):
        experiments.lr_range_test(_builder()(), X, steps=5)


def test_compare_runs_an_optimizer_class_of_ones_own(digits_split):
    class PlainSGD(fastnn.optim.Optimizer):   # a learner's own update rule, in NumPy
        def __init__(self, params=None, lr=0.1):
            super().__init__(params, lr)

        def _new_state(self, p):
            return {}

        def _update(self, p, state):
            p.data -= self.lr * p.grad

    mine = PlainSGD(lr=0.1)
    result = experiments.compare(_builder(), digits_split, epochs=1, verbose=False,
                                 optimizers=[mine, fastnn.optim.SGD(lr=0.1)])
    own, library = result.runs
    assert own.label == "PlainSGD lr=0.1 bs=32" and not mine.params   # run on a copy
    # The same update rule from the same weights on the same batches: the same run.
    np.testing.assert_allclose(own.history.history["loss"], library.history.history["loss"],
                               rtol=1e-4)
    with pytest.raises(ValueError, match=r"optimizers\[0\]: lr must be > 0"), \
            pytest.warns(UserWarning, match="replaces the lr=0.1"):
        experiments.compare(_builder(), digits_split, optimizers=[mine], lrs=[-1.0],
                            verbose=False)


def test_lr_range_test_leaves_the_optimizer_it_is_given_and_names_bad_data(digits_split):
    """Found by an attack: given the model's own optimizer, it left its lr at end_lr (the
    next fit trained at 10); NaN in X gave empty arrays and a suggestion; a loss diverging at
    once suggested the rate that diverged, without a word."""
    model = _builder()()
    model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.01))
    opt = model.compiled.optimizer
    result = experiments.lr_range_test(model, digits_split, optimizer=opt, end_lr=10, steps=20)
    assert opt.lr == 0.01 and result.lrs[0] == pytest.approx(1e-6)
    X, y = digits_split[0], digits_split[1]
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        experiments.lr_range_test(model, (bad, y))
    with pytest.warns(UserWarning, match="diverged within"):
        experiments.lr_range_test(model, (X * 1e3, y), start_lr=1e3, end_lr=1e5)


@pytest.mark.parametrize("settings,words", [
    ({"batch_sizes": [32, 0]}, "batch_sizes"), ({"epochs": 0}, "epochs"),
    ({"target_accuracy": 90}, "0.9 for 90%"), ({"batch_sizes": [2.5]}, "batch_sizes"),
    ({"chance_margin": "0.05"}, "compare: chance_margin must be a number; got '0.05'")])
def test_compare_refuses_bad_settings_before_the_first_run(digits_split, settings, words, capsys):
    """Found by an attack: batch_sizes=[32, 0] trained the first run, then raised, losing it;
    target_accuracy=90 was taken (its column read 'epoch>=9000%'); chance_margin='0.05'
    ended in a raw "'<=' not supported"."""
    with pytest.raises((TypeError, ValueError), match=re.escape(words)):
        experiments.compare(_builder(), digits_split, **settings)
    assert capsys.readouterr().out == ""   # no run had started


def test_lr_range_test_gives_back_the_dropout_streams(digits_split):
    """Weights and buffers were restored, Dropout's offsets not: a fit after the test drew
    other masks than without it (found by an attack)."""
    def fitted(test_first):
        fastnn.seed(0)
        model = nn.Sequential(nn.Dense(64, 32, activation="relu"), nn.Dropout(0.3), nn.Dense(32, 10))
        model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.05))
        if test_first:
            offset = model.layers[1].offset
            experiments.lr_range_test(model, digits_split[:2], steps=10)
            assert model.layers[1].offset == offset
        model.fit(*digits_split[:2], epochs=1, verbose=0, seed=0)
        return model.layers[0].weight.data.copy()

    np.testing.assert_array_equal(fitted(True), fitted(False))


def test_a_build_function_without_a_model_and_a_negative_seed_are_named(digits_split):
    """Found by an attack: a build_model that forgot its return ended in "'NoneType' object
    has no attribute 'compile'", and lr_range_test(seed=-1) in NumPy's "expected
    non-negative integer", neither naming the argument."""
    def build():
        nn.Sequential(nn.Dense(64, 10))  # return forgotten

    with pytest.raises(TypeError, match=r"compare: build_model \('build'\) returned NoneType "
                                        r"None; it must return a new model"):
        experiments.compare(build, digits_split, epochs=1, verbose=False)
    model = _builder()()
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"lr_range_test: seed must be an integer >= 0.*-1"):
        experiments.lr_range_test(model, digits_split[:2], seed=-1, steps=5)
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))


def test_compare_leaves_fastnn_seed_s_generator_as_it_was():
    """compare reseeded the global generator for each run and left it so: after
    fastnn.seed(42) and a compare, the next layer had compare's seed-0 weights (found by an
    attack)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 4)).astype(np.float32), rng.integers(0, 2, 40)
    fastnn.seed(42)
    expected = nn.Dense(4, 3).weight.data
    fastnn.seed(42)
    experiments.compare(lambda: nn.Sequential(nn.Dense(4, 2)), (X, y, X, y), epochs=1,
                        verbose=False)
    np.testing.assert_array_equal(nn.Dense(4, 3).weight.data, expected)


def _gradient_check(model, X, y):
    return gradient_check(model, X, y, "cross_entropy", samples=2)


def _lr_range_test(model, X, y):
    return experiments.lr_range_test(model, (X, y), steps=3, batch_size=8)


@pytest.mark.parametrize("run", [_gradient_check, _lr_range_test])
def test_gradient_check_and_lr_range_test_wait_for_another_thread_s_run(run):
    """They held no run_lock: run from another thread during fit, they switched its steps to
    evaluation mode, trained the test's weights and rolled the fit's back (found by an
    attack). Within this thread's own run (a fit's callback) they still run (re-entrant)."""
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(4, 8, activation="relu"), nn.Dense(8, 2))
    X = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    y = np.arange(16) % 2
    finished = threading.Event()

    def other_thread():
        run(model, X, y)
        finished.set()

    def state():  # what they change first: the mode, the parameters' arrays (a bind)
        return model.training, [id(p.data) for p in model.parameters()]

    with run_lock(model):  # this thread's run, under way
        run(model, X, y)
        before = state()
        thread = threading.Thread(target=other_thread)
        thread.start()
        assert not finished.wait(0.3), "ran during another thread's run"
        assert state() == before, "changed the model during another thread's run"
    thread.join(30)
    assert finished.is_set()


def test_lr_range_test_gives_back_each_module_s_mode():
    """Found by an attack: it restored the model's own mode only (model.train(was)), so a
    batch norm frozen with .eval() came back training, and later fits moved its statistics."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 4)).astype(np.float32)
    y = rng.integers(0, 3, 256)
    model = nn.Sequential(nn.Dense(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dense(8, 3))
    model.layers[1].eval()
    experiments.lr_range_test(model, (X, y), steps=20)
    assert [m.training for m in model.layers] == [True, False, True, True] and model.training
    model.eval()
    experiments.lr_range_test(model, (X, y), steps=5)
    assert not any(m.training for _, m in model.named_modules())
