"""Saving and loading (fastnn.io): bit-identical predictions, torch-compatible tensor names,
resuming training from the optimizer state, and clear errors for damaged or foreign files."""

import json
import sys
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import io, nn, optim

import _ref

st = pytest.importorskip("safetensors.numpy")


@pytest.fixture(scope="module")
def digits():
    X, y, _, _ = (np.asarray(a) for a in fastnn.datasets.load("digits"))
    return X[:300], y[:300]


def build(seed=0):
    fastnn.seed(seed)
    return nn.Sequential(nn.Dense(64, 32, activation="relu", l2=1e-3), nn.Dropout(0.2),
                         nn.Dense(32, 16, activation="tanh", init="xavier_normal"), nn.ReLU(),
                         nn.Dense(16, 10))


@pytest.fixture
def trained(digits):
    model = build()
    model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=3e-3), metrics=["accuracy", "f1"])
    model.fit(*digits, epochs=2, verbose=0, seed=0)
    return model


def test_save_load_predict_bit_identical(trained, digits, tmp_path):
    path = trained.save(tmp_path / "model.safetensors")
    loaded = fastnn.load(path)
    assert isinstance(loaded, nn.Sequential) and repr(loaded) == repr(trained)
    np.testing.assert_array_equal(loaded.predict(digits[0]), trained.predict(digits[0]))
    assert loaded.get_config() == trained.get_config()


def test_a_leading_tilde_is_the_home_folder(trained, tmp_path, monkeypatch):
    """As in a shell: save("~/models/m.safetensors") made a folder named "~" in the working
    folder, which load then found again (and `rm -rf ~` would have removed the home)."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    path = trained.save("~/models/m.safetensors")
    assert path == home / "models" / "m.safetensors" and path.is_file()
    assert not (work / "~").exists()
    assert repr(fastnn.load("~/models/m.safetensors")) == repr(trained)
    assert fastnn.io.read_logs("~/models/m.safetensors") is None  # saved without logs
    fastnn.io.load_weights(fastnn.load("~/models/m.safetensors"), "~/models/m.safetensors")
    log = fastnn.callbacks.CSVLogger("~/log.csv")
    assert log.path == home / "log.csv"
    assert fastnn.callbacks.ModelCheckpoint("~/ck.safetensors").path == str(home / "ck.safetensors")
    fastnn.datasets.save_idx("~/a.idx", np.arange(6, dtype=np.uint8))  # written and read alike
    np.testing.assert_array_equal(fastnn.datasets.load_idx("~/a.idx"), np.arange(6))
    assert sorted(p.name for p in home.iterdir()) == ["a.idx", "models"]
    assert not (work / "~").exists()


def test_file_holds_state_dict_names_and_the_architecture(trained, tmp_path):
    path = io.save(trained, tmp_path / "m.safetensors")
    tensors = st.load_file(str(path))
    assert sorted(tensors) == ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]
    assert tensors["0.weight"].shape == (32, 64) and tensors["4.bias"].shape == (10,)
    np.testing.assert_array_equal(tensors["2.weight"], trained.layers[2].weight.data)
    from safetensors import safe_open
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    model = json.loads(meta["model"])
    assert model["class"] == "Sequential"
    assert [layer["class"] for layer in model["config"]["layers"]] == ["Dense", "Dropout", "Dense",
                                                                        "ReLU", "Dense"]


def test_torch_linear_weights_map_one_to_one(tmp_path, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    path = tmp_path / "from_torch.safetensors"
    st.save_file({k: v.detach().numpy() for k, v in reference.state_dict().items()}, str(path))
    model = io.load_weights(nn.Sequential(nn.Dense(6, 5), nn.ReLU(), nn.Dense(5, 3)), path)
    x = rng.standard_normal((7, 6)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-6)
    # and back: a fastnn file loads into the torch model with strict name checking
    ours = io.save(model, tmp_path / "ours.safetensors")
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in st.load_file(str(ours)).items()})
    with pytest.raises(ValueError, match="holds no fastnn architecture"):
        fastnn.load(path)


def test_resume_with_optimizer_state_equals_uninterrupted_training(digits, tmp_path):
    X, y = digits

    def compiled():
        model = nn.Sequential(nn.Dense(64, 24, activation="relu"), nn.Dense(24, 10))
        model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=3e-3), metrics=["accuracy"])
        return model

    fastnn.seed(0)
    straight = compiled()
    rng = np.random.default_rng(42)
    straight.fit(X, y, epochs=4, batch_size=32, verbose=0, seed=rng)

    fastnn.seed(0)
    first = compiled()
    rng = np.random.default_rng(42)                  # the shuffling stream continues across calls
    first.fit(X, y, epochs=2, batch_size=32, verbose=0, seed=rng)
    path = first.save(tmp_path / "resume.safetensors", include_optimizer=True)
    resumed = fastnn.load(path)
    assert resumed.compiled.optimizer.get_config() == first.compiled.optimizer.get_config()
    history = resumed.fit(X, y, epochs=2, batch_size=32, verbose=0, seed=rng)
    assert "accuracy" in history.history
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value)

    # Without the optimizer state (fresh Adam moments) the result differs.
    fastnn.seed(0)
    again = compiled()
    rng = np.random.default_rng(42)
    again.fit(X, y, epochs=2, batch_size=32, verbose=0, seed=rng)
    weights_only = fastnn.load(again.save(tmp_path / "w.safetensors"))
    weights_only.compile(loss="cross_entropy", optimizer=optim.Adam(lr=3e-3))
    weights_only.fit(X, y, epochs=2, batch_size=32, verbose=0, seed=rng)
    assert not np.array_equal(weights_only.layers[0].weight.data, straight.layers[0].weight.data)


def test_saved_loss_and_metrics_come_back(tmp_path, digits):
    model = nn.Sequential(nn.Dense(64, 1))
    model.compile(loss=fastnn.losses.BinaryCrossEntropy(from_logits=False), optimizer="momentum",
                  metrics=["accuracy", "precision"])
    loaded = fastnn.load(model.save(tmp_path / "b.safetensors", include_optimizer=True))
    assert isinstance(loaded.compiled.loss, fastnn.losses.BinaryCrossEntropy)
    assert loaded.compiled.loss.from_logits is False
    assert loaded.compiled.metric_names == ["accuracy", "precision"]
    assert loaded.compiled.optimizer.get_config() == model.compiled.optimizer.get_config()


def test_include_optimizer_needs_a_compiled_model(tmp_path):
    with pytest.raises(ValueError, match="compile"):
        build().save(tmp_path / "x.safetensors", include_optimizer=True)


def test_loading_leaves_the_global_generator_alone(trained, tmp_path):
    path = trained.save(tmp_path / "m.safetensors")
    fastnn.seed(9)
    expected = fastnn._random.generator().random(3)
    fastnn.seed(9)
    fastnn.load(path)
    np.testing.assert_array_equal(fastnn._random.generator().random(3), expected)


# ----------------------------------------------------------------------------- damaged and foreign files
@pytest.mark.parametrize("keep", [0.999, 0.5, 0.01])
def test_truncated_file_raises(trained, tmp_path, keep):
    path = trained.save(tmp_path / "m.safetensors")
    blob = path.read_bytes()
    path.write_bytes(blob[:int(len(blob) * keep)])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        fastnn.load(path)


def test_flipped_byte_in_the_weights_is_caught(trained, tmp_path):
    path = trained.save(tmp_path / "m.safetensors")
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x40                                   # inside the last tensor's data
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupted"):
        fastnn.load(path)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("just some text, long enough to have a header length" * 3)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        fastnn.load(path)
    with pytest.raises(FileNotFoundError):
        fastnn.load(tmp_path / "missing.safetensors")


def test_mismatched_architecture(trained, tmp_path):
    path = trained.save(tmp_path / "m.safetensors")
    other = nn.Sequential(nn.Dense(64, 32), nn.Dropout(0.2), nn.Dense(32, 8), nn.ReLU(), nn.Dense(8, 10))
    with pytest.raises(ValueError, match=r"do not fit.*2\.weight"):
        io.load_weights(other, path)
    fewer = nn.Sequential(nn.Dense(64, 10))
    with pytest.raises(ValueError, match="do not fit"):
        io.load_weights(fewer, path)


def write_with_metadata(path, tensors, **metadata):
    """A file with a valid checksum whose content is hostile or inconsistent."""
    metadata = {"format": "fastnn", **metadata}
    st.save_file(tensors, str(path), metadata={**metadata, "sha256": io._digest(tensors, metadata)})
    return path


@pytest.mark.parametrize("model_json,message", [
    ({"class": "Popen", "config": {}}, "unknown model class 'Popen'"),
    ({"class": "Parameter", "config": {}}, "unknown model class"),
    ({"class": "Sequential", "config": {"layers": [{"class": "system", "config": {}}]}}, "cannot build"),
    ({"config": {}}, "unknown model class None"),
])
def test_architecture_json_can_only_name_fastnn_classes(tmp_path, model_json, message):
    path = write_with_metadata(tmp_path / "evil.safetensors", {"0.weight": np.zeros((2, 2), np.float32)},
                               model=json.dumps(model_json))
    with pytest.raises(ValueError, match=message):
        fastnn.load(path)


def test_architecture_json_that_is_not_json(tmp_path):
    path = write_with_metadata(tmp_path / "bad.safetensors", {"a": np.zeros(1, np.float32)}, model="{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        fastnn.load(path)


def test_architecture_and_weights_that_disagree(trained, tmp_path):
    config = json.dumps({"class": "Sequential", "config": trained.get_config()})
    tensors = {("4.extra" if k == "4.bias" else k): v for k, v in trained.state_dict().items()}
    path = write_with_metadata(tmp_path / "m.safetensors", tensors, model=config)
    with pytest.raises(ValueError, match="4.bias"):
        fastnn.load(path)


def test_missing_safetensors_says_how_to_install(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ImportError, match=r'pip install "fastnn-learn\[io\]"'):
        trained.save(tmp_path / "m.safetensors")
    with pytest.raises(ImportError, match=r'pip install "fastnn-learn\[io\]"'):
        fastnn.load(tmp_path / "m.safetensors")


def test_import_fastnn_stays_light():
    proc = _ref.run_python("import sys, fastnn; "
                           "print(sorted(m for m in ('tqdm', 'safetensors', 'sklearn', 'matplotlib', 'torch') "
                           "if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("make", [lambda: fastnn.schedulers.StepLR(2, 0.5),
                                  lambda: fastnn.schedulers.ExponentialLR(0.7),
                                  lambda: fastnn.schedulers.CosineLR(5, min_lr=1e-4, warmup_epochs=1)],
                         ids=["step", "exponential", "cosine-warmup"])
@pytest.mark.parametrize("checkpoint_first", [False, True], ids=["scheduler-first", "checkpoint-first"])
def test_resumed_fit_goes_on_with_the_schedulers_rates(digits, tmp_path, make, checkpoint_first):
    """A checkpoint written after epoch 3 of 5 and the same scheduler passed again: epochs 4
    and 5 get the uninterrupted run's rates (the restored, decayed lr had been taken as the
    base and decayed again: StepLR's 5th epoch ran at 0.00125 for 0.0025), whichever of the
    two callbacks comes first (Keras's usual order puts the checkpoint first)."""
    X, y = digits

    def compiled():
        fastnn.seed(0)
        model = nn.Sequential(nn.Dense(64, 16, activation="relu"), nn.Dense(16, 10))
        model.compile(loss="cross_entropy", optimizer=optim.Adam(lr=1e-2))
        return model

    straight = compiled().fit(X, y, epochs=5, verbose=0, seed=0, callbacks=[make()]).history["lr"]

    class StopAfterThird(fastnn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 2

    path = tmp_path / "ck.safetensors"
    both = [make(), fastnn.callbacks.ModelCheckpoint(path, save_best_only=False, include_optimizer=True)]
    compiled().fit(X, y, epochs=5, verbose=0, seed=0,
                   callbacks=(both[::-1] if checkpoint_first else both) + [StopAfterThird()])
    resumed = fastnn.load(path).fit(X, y, epochs=5, verbose=0, seed=0, callbacks=[make()])
    np.testing.assert_allclose(resumed.history["lr"], straight[3:], rtol=1e-12)


def test_resume_with_dropout_continues_its_masks(digits, tmp_path):
    X, y = digits

    def compiled():
        model = nn.Sequential(nn.Dense(64, 24, activation="relu"), nn.Dropout(0.3),
                              nn.Dense(24, 10))
        model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.05, momentum=0.9))
        return model

    fastnn.seed(1)
    straight = compiled()
    rng = np.random.default_rng(7)
    straight.fit(X, y, epochs=2, batch_size=64, verbose=0, seed=rng)
    fastnn.seed(1)
    first = compiled()
    rng = np.random.default_rng(7)
    first.fit(X, y, epochs=1, batch_size=64, verbose=0, seed=rng)
    resumed = fastnn.load(first.save(tmp_path / "d.safetensors", include_optimizer=True))
    assert resumed.layers[1].offset == first.layers[1].offset > 0
    resumed.fit(X, y, epochs=1, batch_size=64, verbose=0, seed=rng)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value)


# ----------------------------------------------------------------------------- compile settings
def test_a_loaded_model_evaluates_with_its_saved_compile_settings(trained, digits, tmp_path):
    """As Keras: the loss, the metrics and the optimizer's settings are saved with the model
    (include_optimizer only adds the optimizer's state), so evaluate works after load."""
    X, y = digits
    loaded = fastnn.load(trained.save(tmp_path / "m.safetensors"))
    assert loaded.evaluate(X, y) == trained.evaluate(X, y)     # same weights, same metrics
    assert set(loaded.evaluate(X, y)) == {"loss", "accuracy", "f1"}
    assert isinstance(loaded.compiled.loss, fastnn.losses.CrossEntropy)
    assert loaded.compiled.optimizer.get_config() == trained.compiled.optimizer.get_config()
    # without include_optimizer the optimizer starts afresh: no steps, zero moments
    assert loaded.compiled.optimizer.step_count == 0 and trained.compiled.optimizer.step_count > 0
    assert all(not v.any() for k, v in loaded.compiled.optimizer.state_arrays().items())
    history = loaded.fit(X, y, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "f1", "lr"}


def test_a_file_without_compile_settings_loads_uncompiled(digits, tmp_path):
    """An uncompiled model's file, as every file saved without include_optimizer was before
    the compile settings were saved."""
    model = build()
    loaded = fastnn.load(model.save(tmp_path / "plain.safetensors"))
    assert loaded.compiled is None
    np.testing.assert_array_equal(loaded.predict(digits[0]), model.predict(digits[0]))
    with pytest.raises(RuntimeError, match="compile"):
        loaded.evaluate(*digits)


def test_the_cli_saves_a_model_that_evaluates(tmp_path, capsys):
    from fastnn import cli

    path = tmp_path / "xor.safetensors"
    assert cli.main(["train", "--data", "xor", "--epochs", "2", "--optimizer", "momentum",
                     "--lr", "0.05", "--save", str(path)]) == 0
    X_train, y_train, X_test, y_test = fastnn.datasets.load("xor", seed=0)
    result = fastnn.load(path).evaluate(X_test, y_test)
    assert set(result) == {"loss", "accuracy"}
    shown = capsys.readouterr().out
    assert f"test accuracy {result['accuracy']:.4f}" in shown
    config = fastnn.load(path).compiled.optimizer.get_config()
    assert config["class"] == "SGD" and config["lr"] == 0.05 and config["momentum"] == 0.9


def test_without_safetensors_the_cli_fails_before_training(tmp_path, capsys, monkeypatch):
    from fastnn import cli

    monkeypatch.setitem(sys.modules, "safetensors", None)     # import safetensors fails
    code = cli.main(["train", "--data", "xor", "--epochs", "2", "--save",
                     str(tmp_path / "m.safetensors")])
    out, err = capsys.readouterr()
    assert code == 1 and 'pip install "fastnn-learn[io]"' in err
    assert "Epoch" not in out and "test accuracy" not in out, out      # nothing trained
    assert not (tmp_path / "m.safetensors").exists()


def test_without_safetensors_a_checkpointed_fit_fails_before_its_first_epoch(
        digits, tmp_path, monkeypatch):
    model = build()
    model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.1))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    monkeypatch.setitem(sys.modules, "safetensors", None)
    checkpoint = fastnn.callbacks.ModelCheckpoint(tmp_path / "best.safetensors",
                                                  monitor="loss")
    with pytest.raises(ImportError, match=r'pip install "fastnn-learn\[io\]"'):
        model.fit(*digits, epochs=2, verbose=0, callbacks=[checkpoint])
    for name, value in model.state_dict().items():           # not one step was taken
        np.testing.assert_array_equal(value, before[name])


def test_a_model_whose_scheduler_annealed_lr_to_zero_saves_and_loads(digits, tmp_path):
    """CosineLR ends at lr 0, which a new optimizer refuses; the saved settings keep it."""
    model = build()
    model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.1, momentum=0.9))
    model.fit(*digits, epochs=2, verbose=0, callbacks=[fastnn.schedulers.CosineLR(1)])
    assert model.compiled.optimizer.lr == 0.0
    for include_optimizer in (False, True):
        loaded = fastnn.load(model.save(tmp_path / "m.safetensors",
                                        include_optimizer=include_optimizer))
        assert loaded.compiled.optimizer.get_config() == model.compiled.optimizer.get_config()


def test_a_model_compiled_with_a_loss_of_ones_own_still_loads(digits, tmp_path):
    """load rebuilds only fastnn's classes: such settings are left out, not saved to fail."""
    class MyMSE(fastnn.losses.MSE):
        pass

    model = build()
    model.compile(loss=MyMSE(), optimizer="adam")
    loaded = fastnn.load(model.save(tmp_path / "mine.safetensors"))
    assert loaded.compiled is None
    np.testing.assert_array_equal(loaded.predict(digits[0]), model.predict(digits[0]))


def test_training_on_at_a_learning_rate_annealed_to_zero_warns(digits, tmp_path):
    X, y = digits
    model = build()
    model.compile(loss="cross_entropy", optimizer=optim.SGD(lr=0.1))
    model.fit(X, y, epochs=2, batch_size=64, verbose=0,
              callbacks=[fastnn.schedulers.CosineLR(total_epochs=2)])
    assert model.compiled.optimizer.lr == 0.0   # the premise: the schedule ended at 0
    loaded = fastnn.load(model.save(tmp_path / "annealed.safetensors"))
    before = [p.data.copy() for p in loaded.parameters()]
    with pytest.warns(UserWarning, match=r"learning rate is 0.*will not change.*lr ="):
        loaded.fit(X, y, epochs=1, batch_size=64, verbose=0)
    for p, w in zip(loaded.parameters(), before):   # why it must warn: nothing learnt
        np.testing.assert_array_equal(p.data, w)
    with warnings.catch_warnings():   # a schedule that sets the rate of each epoch: no warning
        warnings.simplefilter("error", UserWarning)
        loaded.fit(X, y, epochs=1, batch_size=64, verbose=0,
                   callbacks=[fastnn.callbacks.LearningRateScheduler(lambda epoch: 0.01)])
    assert loaded.compiled.optimizer.lr == 0.01


def test_a_submodule_named_optimizer_saves_and_loads(tmp_path):
    """Its weights ("optimizer.weight") had been taken for the optimizer's state in the file
    and left out: the file could not be loaded (found by an attack). With
    include_optimizer=True, a name both would claim is refused at save."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.optimizer = nn.Dense(6, 3)

        def forward(self, x):
            return self.optimizer(x)

    fastnn.seed(0)
    model = Net()
    path = model.save(tmp_path / "n.safetensors")
    other = Net()
    io.load_weights(other, path)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[name], value)
    x = np.ones((2, 6), np.float32)
    model.compile(loss="mse", optimizer=optim.Adam())
    model.fit(x, np.zeros((2, 3), np.float32), epochs=1, verbose=0)
    path = model.save(tmp_path / "n2.safetensors", include_optimizer=True)
    io.load_weights(other, path)
    np.testing.assert_array_equal(other.predict(x), model.predict(x))


def test_a_layer_class_of_ones_own_inside_a_model_is_not_rebuilt_as_fastnns(tmp_path):
    """Found by an attack: a ReLU of one's own in a Sequential loaded as nn.ReLU, silently
    (the check for a class of one's own looked at the model's class only)."""
    class ReLU(nn.Module):  # named as fastnn's, computing something else
        def forward(self, x):
            return fastnn.functional.tanh(x)

    model = nn.Sequential(nn.Dense(4, 4), ReLU(), nn.Dense(4, 2))
    path = model.save(tmp_path / "own.safetensors")
    with pytest.raises(io.InvalidFileError, match=r"ReLU \(layer '1'\)'?.*a model class of your own"):
        fastnn.load(path)
    fresh = nn.Sequential(nn.Dense(4, 4), ReLU(), nn.Dense(4, 2))
    io.load_weights(fresh, path)  # what the message says to do
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))


def test_optimizer_state_is_saved_by_parameter_not_by_slot(tmp_path, digits):
    """Found by an attack: the state went to the file in the order the optimizer was bound
    in; with two layers swapped since, the loaded model resumed with Adam's moments on the
    wrong layers, silently. A layer added or removed since made a file load refused."""
    X, y = digits
    model = nn.Sequential(nn.Dense(64, 16, "relu"), nn.Dense(16, 16, "relu"), nn.Dense(16, 16, "relu"),
                          nn.Dense(16, 10))
    model.compile(loss="cross_entropy", optimizer="adam")
    model.fit(X[:256], y[:256], epochs=1, verbose=0, seed=0)
    model.layers[1], model.layers[2] = model.layers[2], model.layers[1]
    path = model.save(tmp_path / "swapped.safetensors", include_optimizer=True)
    loaded = fastnn.load(path)
    for a, b in zip(model.parameters(), loaded.parameters()):  # each layer's own moments
        held = model.compiled.optimizer.params.index(a)
        np.testing.assert_array_equal(loaded.compiled.optimizer.state[loaded.parameters().index(b)]["exp_avg"],
                                      model.compiled.optimizer.state[held]["exp_avg"])
    first = model.fit(X[256:512], y[256:512], epochs=1, verbose=0, seed=1).history["loss"]
    again = loaded.fit(X[256:512], y[256:512], epochs=1, verbose=0, seed=1).history["loss"]
    assert first == again
    model.layers.append(nn.Dense(10, 10))
    with pytest.raises(ValueError, match=r"optimizer holds other parameters than the model has now"):
        model.save(tmp_path / "grown.safetensors", include_optimizer=True)


def test_save_refuses_a_model_whose_file_could_not_be_rebuilt(tmp_path):
    """Found by an attack: tied weights saved into a file that load refused, blaming it."""
    model = nn.Sequential(nn.Dense(4, 4), nn.Tanh(), nn.Dense(4, 4))
    model.layers[2].weight = model.layers[0].weight
    with pytest.raises(ValueError, match=r"'0.weight' and '2.weight' are the same parameter"):
        model.save(tmp_path / "tied.safetensors")
    assert not (tmp_path / "tied.safetensors").exists()


def test_read_logs_refuses_logged_values_that_are_not_numbers(tmp_path):
    model = nn.Sequential(nn.Dense(2, 2))
    path = io.save(model, tmp_path / "logs.safetensors", logs={"loss": 0.5})
    assert io.read_logs(path) == {"loss": 0.5}
    metadata, tensors = io._read(path)
    metadata["logs"] = json.dumps({"loss": "0.1"})  # re-signed: a file save could have written
    metadata["sha256"] = io._digest(tensors, metadata)
    st.save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(io.InvalidFileError, match=r"the logged 'loss' must be a number; got '0.1'"):
        io.read_logs(path)


def test_a_class_of_ones_own_with_tied_weights_saves_for_load_weights(tmp_path):
    """Found by a review: the tied-weight refusal also refused one's own class, whose file
    loads with load_weights into a model that ties its weights again itself."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = nn.Dense(4, 4), nn.Dense(4, 4, bias=False)
            self.dec.weight = self.enc.weight

        def forward(self, x):
            return self.dec(self.enc(x))

    model = Tied()
    path = model.save(tmp_path / "tied.safetensors")
    fresh = Tied()
    io.load_weights(fresh, path)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))


def test_a_path_ending_in_a_separator_is_a_folder_not_a_file_name(tmp_path):
    """Found by an attack: save(m, "dir/models/") wrote the file "dir/models" (Path() drops
    the separator before check_output_path saw it); save_idx and export_onnx alike."""
    import os

    model = nn.Sequential(nn.Dense(2, 2))
    calls = [lambda p: io.save(model, p), lambda p: fastnn.datasets.save_idx(p, np.zeros(3, np.uint8)),
             lambda p: fastnn.load(p), lambda p: io.read_logs(p)]
    import importlib.util
    if importlib.util.find_spec("onnx") is not None:
        calls.append(lambda p: model.export_onnx(p, (2,)))
    for call in calls:
        given = str(tmp_path / "dir" / "models") + os.sep
        with pytest.raises(IsADirectoryError, match="ends with a path separator") as info:
            call(given)
        assert repr(given) in str(info.value)
        assert not (tmp_path / "dir").exists()


@pytest.mark.parametrize("call,error,message", [
    (lambda p: io.save(nn.Sequential(nn.Dense(2, 2)), p, logs={"a": 10**400}), ValueError,
     r"save: logs\['a'\] is an integer of 1329 bits, beyond a float's range"),
    (lambda p: io.save(nn.Sequential(nn.Dense(2, 2)), p, logs=[1, 2]), TypeError,
     r"save: logs must be a mapping of metric names to numbers .*got list \[1, 2\]"),
    (lambda p: io.save(nn.Sequential(nn.Dense(2, 2)), p, logs={"a": "abc"}), TypeError,
     r"save: logs\['a'\] must be a number; got 'abc'"),
    (lambda p: io.save(nn.Sequential(nn.Dense(2, 2)), p, logs={("a",): 1.0}), TypeError,
     r"save: logs' keys must be metric names \(strings\); got tuple"),
    (lambda p: io.save("str", p), TypeError, "save: model must be a fastnn.nn.Module; got str 'str'"),
    (lambda p: io.load_weights(None, p), TypeError,
     "load_weights: model must be a fastnn.nn.Module; got NoneType None"),
])
def test_save_and_load_weights_name_their_bad_arguments(tmp_path, call, error, message):
    """Found by an attack: a bare OverflowError, AttributeErrors and float()'s own words."""
    path = tmp_path / "m.safetensors"
    with pytest.raises(error, match=message):
        call(path)
    assert not path.exists()


def test_read_logs_of_an_integer_beyond_a_float_is_an_invalid_file(tmp_path):
    """Found by an attack: 1e400 written as a JSON int was a bare OverflowError."""
    path = io.save(nn.Sequential(nn.Dense(2, 2)), tmp_path / "logs.safetensors", logs={"loss": 0.5})
    metadata, tensors = io._read(path)
    metadata["logs"] = '{"loss": 1' + "0" * 400 + "}"
    metadata["sha256"] = io._digest(tensors, metadata)
    st.save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(io.InvalidFileError, match=r"logged 'loss' is an integer beyond a float's range"):
        io.read_logs(path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_a_file_that_cannot_be_mapped_is_an_os_error_naming_it():
    """Found by an attack: fastnn.load("/proc/self/status") said "No such device", no path."""
    for call in (fastnn.load, lambda p: io.load_weights(nn.Sequential(nn.Dense(2, 2)), p)):
        with pytest.raises(OSError, match=r"cannot read '/proc/self/status': .*memory-mapped"):
            call("/proc/self/status")
