"""Learning-rate schedules: the lr of every epoch against the closed-form formula and against
torch.optim.lr_scheduler."""

import math
import pickle

import numpy as np
import pytest

from fastnn import nn, optim, schedulers

EPOCHS = 40
BASE_LR = 0.1


def make_optimizer(lr=BASE_LR):
    return optim.SGD([nn.Parameter(np.zeros(3))], lr=lr, momentum=0.9)


def fastnn_lrs(scheduler, epochs=EPOCHS, metrics=None):
    """The lr of each epoch, as the training loop sees them: read at the start of the epoch,
    then on_epoch_end."""
    opt = make_optimizer()
    scheduler.bind(opt)
    lrs = []
    for epoch in range(epochs):
        lrs.append(opt.lr)
        scheduler.on_epoch_end(epoch, None if metrics is None else {"val_loss": metrics[epoch]})
    return lrs


def torch_lrs(make, epochs=EPOCHS, metrics=None):
    torch = pytest.importorskip("torch")
    topt = torch.optim.SGD([torch.zeros(3, requires_grad=True)], lr=BASE_LR, momentum=0.9)
    sched = make(torch.optim.lr_scheduler, topt)
    lrs = []
    for epoch in range(epochs):
        lrs.append(topt.param_groups[0]["lr"])
        topt.step()
        sched.step() if metrics is None else sched.step(metrics[epoch])
    return lrs


def close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15, err_msg=what)


# ----------------------------------------------------------------------------- formulas
def test_step_lr_formula():
    sched = schedulers.StepLR(step_size=7, gamma=0.5)
    lrs = fastnn_lrs(sched)
    close(lrs, [BASE_LR * 0.5 ** (e // 7) for e in range(EPOCHS)], "StepLR")
    assert [sched.lr_for_epoch(e) for e in range(EPOCHS)] == lrs


def test_exponential_lr_formula():
    lrs = fastnn_lrs(schedulers.ExponentialLR(0.9))
    close(lrs, [BASE_LR * 0.9 ** e for e in range(EPOCHS)], "ExponentialLR")


@pytest.mark.parametrize("warmup", [0, 1, 5])
def test_cosine_lr_formula(warmup):
    total, min_lr = 30, 1e-3
    lrs = fastnn_lrs(schedulers.CosineLR(total, min_lr=min_lr, warmup_epochs=warmup))
    expected = []
    for e in range(EPOCHS):
        if e < warmup:
            expected.append(BASE_LR * (e + 1) / (warmup + 1))
        else:
            t = min(e, total) - warmup
            expected.append(min_lr + (BASE_LR - min_lr) * (1 + math.cos(math.pi * t / (total - warmup))) / 2)
    close(lrs, expected, f"CosineLR warmup={warmup}")
    assert lrs[warmup] == pytest.approx(BASE_LR) and lrs[-1] == pytest.approx(min_lr)
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup + 1])), "warmup rises"
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:])), "then decays"


# ----------------------------------------------------------------------------- against torch
def test_step_lr_against_torch():
    close(fastnn_lrs(schedulers.StepLR(5, gamma=0.3)),
          torch_lrs(lambda S, o: S.StepLR(o, step_size=5, gamma=0.3)), "StepLR vs torch")


def test_exponential_lr_against_torch():
    close(fastnn_lrs(schedulers.ExponentialLR(0.85)),
          torch_lrs(lambda S, o: S.ExponentialLR(o, gamma=0.85)), "ExponentialLR vs torch")


def test_cosine_lr_against_torch():
    close(fastnn_lrs(schedulers.CosineLR(25, min_lr=0.01), epochs=26),
          torch_lrs(lambda S, o: S.CosineAnnealingLR(o, T_max=25, eta_min=0.01), epochs=26),
          "CosineLR vs CosineAnnealingLR")


def test_cosine_warmup_against_torch():
    total, warmup = 30, 4

    def make(S, o):
        return S.SequentialLR(o, [S.LinearLR(o, start_factor=1 / (warmup + 1), total_iters=warmup),
                                  S.CosineAnnealingLR(o, T_max=total - warmup, eta_min=0.002)],
                              milestones=[warmup])

    close(fastnn_lrs(schedulers.CosineLR(total, min_lr=0.002, warmup_epochs=warmup), epochs=total),
          torch_lrs(make, epochs=total), "CosineLR warmup vs LinearLR + CosineAnnealingLR")


VAL_LOSSES = ([1.0, 0.8, 0.7, 0.7, 0.70005, 0.69, 0.69, 0.69, 0.69, 0.69, 0.5]
              + [0.5] * 12 + [0.4, 0.45, 0.41] + [0.41] * 14)


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("patience,min_lr", [(0, 0.0), (2, 0.0), (3, 2e-4)])
def test_reduce_on_plateau_against_torch(mode, patience, min_lr):
    sign = 1 if mode == "min" else -1
    values = [sign * v for v in VAL_LOSSES]
    sched = schedulers.ReduceLROnPlateau(factor=0.2, patience=patience, min_delta=1e-3, min_lr=min_lr,
                                         mode=mode)
    lrs = fastnn_lrs(sched, len(values), values)
    expected = torch_lrs(lambda S, o: S.ReduceLROnPlateau(o, mode=mode, factor=0.2, patience=patience,
                                                          threshold=1e-3, threshold_mode="abs",
                                                          min_lr=min_lr),
                         len(values), values)
    close(lrs, expected, "ReduceLROnPlateau vs torch")
    assert min(lrs) < BASE_LR and min(lrs) >= min_lr


def test_reduce_on_plateau_formula():
    # patience 2: the lr drops on the third epoch in a row without an improvement > min_delta.
    values = [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.85, 0.85, 0.85, 0.85]
    lrs = fastnn_lrs(schedulers.ReduceLROnPlateau(factor=0.5, patience=2), len(values), values)
    assert lrs == [0.1] * 5 + [0.05] * 4 + [0.025]
    logs = {"loss": 1.0}
    sched = schedulers.ReduceLROnPlateau(monitor="loss", patience=0).bind(make_optimizer())
    sched.on_epoch_end(0, logs)
    sched.on_epoch_end(1, logs)
    assert sched.optimizer.lr == pytest.approx(0.01)


# ----------------------------------------------------------------------------- binding and errors
def test_bind_records_the_base_lr_once_and_sets_epoch_zero():
    opt = make_optimizer(0.4)
    sched = schedulers.CosineLR(10, warmup_epochs=3)
    assert sched.bind(opt) is sched
    assert opt.lr == pytest.approx(0.1) and sched.base_lr == 0.4
    for epoch in range(6):
        sched.on_epoch_end(epoch)
    sched.bind(opt)  # a second fit: the schedule restarts from the same base lr
    assert sched.base_lr == 0.4 and opt.lr == pytest.approx(0.1)
    other = make_optimizer(0.2)
    sched.bind(other)
    assert sched.base_lr == 0.2
    for epoch in range(4):
        sched.on_epoch_end(epoch)
    sched.bind(opt)  # one scheduler for two models' fits: each goes on from its own base
    assert sched.base_lr == 0.4 and opt.lr == pytest.approx(0.1)
    sched.bind(other)
    assert sched.base_lr == 0.2 and other.lr == pytest.approx(0.05)
    copied = pickle.loads(pickle.dumps(sched))
    assert copied.base_lr == 0.2 and copied.optimizer.lr == pytest.approx(0.05)


def test_scheduler_errors():
    with pytest.raises(RuntimeError) as info:
        schedulers.StepLR(3).on_epoch_end(0)
    assert "bind" in str(info.value)
    sched = schedulers.ReduceLROnPlateau().bind(make_optimizer())
    with pytest.raises(ValueError) as info:
        sched.on_epoch_end(0, {"loss": 1.0})
    assert "val_loss" in str(info.value) and "loss" in str(info.value)
    for make, name in [(lambda: schedulers.StepLR(0), "step_size"),
                       (lambda: schedulers.StepLR(2, gamma=1.5), "gamma"),
                       (lambda: schedulers.ExponentialLR(0.0), "gamma"),
                       (lambda: schedulers.CosineLR(10, warmup_epochs=10), "warmup_epochs"),
                       (lambda: schedulers.CosineLR(10, min_lr=-1.0), "min_lr"),
                       (lambda: schedulers.ReduceLROnPlateau(factor=1.0), "factor"),
                       (lambda: schedulers.ReduceLROnPlateau(patience=-1), "patience"),
                       (lambda: schedulers.ReduceLROnPlateau(mode="up"), "mode")]:
        with pytest.raises(ValueError) as info:
            make()
        assert name in str(info.value), str(info.value)


@pytest.mark.parametrize("make,message", [
    (lambda: schedulers.StepLR(2, gamma=None), "gamma must be a number; got NoneType None"),
    (lambda: schedulers.ExponentialLR("x"), "gamma must be a number; got str 'x'"),
    (lambda: schedulers.CosineLR(5, warmup_epochs="a"), "warmup_epochs must be an integer >= 0; got str 'a'"),
    (lambda: schedulers.CosineLR(5, warmup_epochs=1.5), "warmup_epochs must be an integer >= 0; got float 1.5"),
    (lambda: schedulers.ReduceLROnPlateau(patience=None), "patience must be an integer >= 0; got NoneType None"),
    (lambda: schedulers.ReduceLROnPlateau(patience=float("nan")), "patience must be an integer >= 0")])
def test_scheduler_arguments_of_the_wrong_type_are_named(make, message):
    """Python's own conversion errors ('could not convert string to float') named nothing."""
    with pytest.raises((TypeError, ValueError), match=message.replace("(", r"\(").replace(")", r"\)")):
        make()
    assert schedulers.ReduceLROnPlateau(patience=3.0).patience == 3


def test_a_validation_key_without_validation_data_is_refused_before_training():
    """Found by an attack: ReduceLROnPlateau watching val_loss, or a ModelCheckpoint path with
    {val_loss}, without validation data, raised only after the first epoch had trained."""
    from fastnn import callbacks, nn

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 4)).astype(np.float32), rng.integers(0, 2, 40)
    for cb, words in ((schedulers.ReduceLROnPlateau(), "ReduceLROnPlateau monitors 'val_loss'"),
                      (callbacks.ModelCheckpoint("ck-{val_loss:.3f}.safetensors", monitor="loss"),
                       "ModelCheckpoint's path holds 'val_loss'")):
        model = nn.Sequential(nn.Dense(4, 2))
        model.compile(loss="cross_entropy", optimizer="sgd")
        before = model.layers[0].weight.data.copy()
        with pytest.raises(ValueError, match=rf"callbacks\[0\]: {words}.*validation"):
            model.fit(X, y, epochs=2, verbose=0, callbacks=[cb])
        np.testing.assert_array_equal(model.layers[0].weight.data, before)  # nothing trained


def test_a_scheduler_class_instead_of_an_instance_is_named():
    """Found by an attack: callbacks=[schedulers.StepLR] (the class) ended in a raw "bind()
    missing 1 required positional argument: 'optimizer'" from inside fit."""
    from fastnn import callbacks, nn

    model = nn.Sequential(nn.Dense(4, 2))
    model.compile(loss="cross_entropy", optimizer="sgd")
    X, y = np.ones((8, 4), np.float32), np.zeros(8, np.int64)
    with pytest.raises(TypeError, match=r"callbacks\[1\] is the class StepLR, not a callback: "
                                        r"create one, StepLR\(...\)"):
        model.fit(X, y, verbose=0, callbacks=[callbacks.Callback(), schedulers.StepLR])
    with pytest.raises(TypeError, match=r"LearningRateScheduler: schedule is the class CosineLR"):
        callbacks.LearningRateScheduler(schedulers.CosineLR)


@pytest.mark.parametrize("monitor", [None, 123, ("val_loss",)])
def test_reduce_lr_on_plateau_refuses_a_monitor_that_is_not_a_name(monitor):
    """As EarlyStopping and ModelCheckpoint: str(None) had been taken and failed an epoch
    later, naming 'None'."""
    with pytest.raises(TypeError, match="ReduceLROnPlateau: monitor must be a logged name"):
        schedulers.ReduceLROnPlateau(monitor=monitor)
