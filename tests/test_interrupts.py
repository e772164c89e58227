"""Ctrl-C (KeyboardInterrupt) mid-call, as notebook users send it: the model, its weights and
its optimizer are left whole. A real SIGINT is raised (signal.raise_signal) at a chosen point
inside the library's work, so the tests see what a user's Ctrl-C would do there."""

import signal

import numpy as np
import pytest

import fastnn
from fastnn import experiments, losses, nn, optim
from fastnn.diagnostics import gradient_check


class SignalOnSwitch(nn.Dropout):
    """A Dropout that sends this process a SIGINT on its ``at``-th mode switch (the walk
    of every layer that ``model.train(mode)`` makes), in the middle of the model's walk."""

    at = 0

    def train(self, mode=True):
        self.switches = getattr(self, "switches", 0) + 1
        if self.switches == self.at:
            signal.raise_signal(signal.SIGINT)
        return super().train(mode)


def modes(model):
    return {name or "<model>": m.training for name, m in model.named_modules()}


def run_predict(model, X, y):
    model.predict(X)


def run_evaluate(model, X, y):
    model.evaluate(X, y)


def run_gradient_check(model, X, y):
    gradient_check(model, X, y, "cross_entropy", samples=2)


def run_fit(model, X, y):
    model.fit(X, y, epochs=1, verbose=0)


def run_lr_range_test(model, X, y):
    experiments.lr_range_test(model, (X, y), steps=3, batch_size=8)


@pytest.mark.parametrize("run, training", [
    (run_predict, True), (run_evaluate, True), (run_gradient_check, True),
    (run_fit, False), (run_lr_range_test, False)])
@pytest.mark.parametrize("at", [1, 2], ids=["switch", "restore"])
def test_a_ctrl_c_during_a_mode_switch_leaves_every_layer_in_its_mode(run, training, at):
    # The walk over the layers had been cut: some layers in each mode, and the next run's
    # restore of the top flag then put all of them in the wrong one.
    fastnn.seed(0)
    trap = SignalOnSwitch(0.5)
    model = nn.Sequential(nn.Dense(4, 8, activation="relu"), trap, nn.Dense(8, 3), nn.Dropout(0.5))
    model.compile(loss="cross_entropy", optimizer="sgd")
    X = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    y = np.arange(16) % 3
    model.train(training)
    trap.switches, trap.at = 0, at
    with pytest.raises(KeyboardInterrupt):
        run(model, X, y)
    assert trap.switches == 2  # the switch and the restore both ran whole
    assert set(modes(model).values()) == {training}, modes(model)


def fresh_adam():
    """A one-layer model and its Adam, every gradient 0.5: the same each call."""
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(4, 4))
    opt = optim.Adam(model.parameters(), lr=0.01)
    for p in model.parameters():
        p.grad[...] = 0.5
    return model, opt


def test_a_ctrl_c_inside_an_optimizer_step_leaves_its_count_and_weights_in_step():
    # The count had been raised before the update ran: Adam's bias correction then used the
    # wrong step, silently, and a checkpoint saved it.
    model, opt = fresh_adam()
    update = opt._update

    def interrupted_update(flat, state):
        signal.raise_signal(signal.SIGINT)
        update(flat, state)

    opt._update = interrupted_update
    with pytest.raises(KeyboardInterrupt):
        opt.step()
    reference, ref_opt = fresh_adam()
    ref_opt.step()
    assert opt.step_count == ref_opt.step_count == 1
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_a_bind_cut_short_leaves_the_optimizer_bound_as_it_was():
    # bind had taken the new parameter list before building their buffer and state: a
    # Ctrl-C (or a failure) in between left it stepping the old buffer under the new list.
    model, opt = fresh_adam()
    other = nn.Sequential(nn.Dense(4, 6), nn.Dense(6, 2))
    before = [p.data.copy() for p in other.parameters()]

    def interrupted_state(flat):
        signal.raise_signal(signal.SIGINT)

    opt._new_state = interrupted_state
    with pytest.raises(KeyboardInterrupt):
        opt.bind(other.parameters())
    del opt._new_state
    assert [id(p) for p in opt.params] == [id(p) for p in model.parameters()]
    opt.step()
    reference, ref_opt = fresh_adam()
    ref_opt.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    for p, b in zip(other.parameters(), before):   # moved into the dropped buffer, values kept
        np.testing.assert_array_equal(p.data, b)


class InterruptedLoss(losses.CrossEntropy):
    """Cross-entropy whose ``at``-th call raises KeyboardInterrupt (a Ctrl-C in a forward pass
    of gradient_check's)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def __call__(self, pred, target):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().__call__(pred, target)


@pytest.mark.parametrize("at", [3, 4, 5, 9])  # the calls at weights moved by eps/4, eps, 2 eps
def test_a_ctrl_c_during_gradient_check_leaves_every_weight_as_it_was(at):
    fastnn.seed(0)
    model = nn.Sequential(nn.Dense(4, 8, activation="tanh"), nn.Dense(8, 3))
    X = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    y = np.arange(6) % 3
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(KeyboardInterrupt):
        gradient_check(model, X, y, InterruptedLoss(at), samples=3)
    for p, w in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, w)
