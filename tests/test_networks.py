"""Your own network: real Keras models built here (a Sequential VGG-like stack, a Functional net
with two residual blocks holding BatchNorm, a nested model), saved as .keras files or given as a
builder; their switches found, BatchNorm replaced by identities with the graph intact, the
parameter count falling by exactly 4 x channels per BatchNorm, and a real run trained."""

import io
import json
import os
import subprocess
import sys

import pytest

keras = pytest.importorskip("keras")

from cnn_ablation.config import ConfigError, RunConfig  # noqa: E402
from cnn_ablation.jobs.launch import new_run, submit  # noqa: E402
from cnn_ablation.networks import registry as networks  # noqa: E402
from cnn_ablation.networks import surgery  # noqa: E402
from cnn_ablation.storage.runs import find_run, list_runs  # noqa: E402
from tests.support import ROOT  # noqa: E402

L = keras.layers


def vgg_like():
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        L.Conv2D(8, 3, padding="same", name="c1"), L.BatchNormalization(name="bn_1"),
        L.ReLU(name="r1"),
        L.Conv2D(16, 3, strides=2, padding="same", name="c2"), L.BatchNormalization(name="bn_2"),
        L.ReLU(name="r2"), L.Flatten(name="flat"), L.Dropout(0.5, name="drop"),
        L.Dense(10, activation="softmax", name="out")], name="vgg")


def resnet_like():
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(16, 3, padding="same", name="stem")(inputs)
    for block in (1, 2):
        y = L.Conv2D(16, 3, padding="same", name=f"b{block}_conv")(x)
        y = L.BatchNormalization(name=f"b{block}_bn")(y)
        y = L.ReLU(name=f"b{block}_relu")(y)
        x = L.Add(name=f"b{block}_add")([x, y])  # the skip connection
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dropout(0.3, name="head_drop")(x)
    return keras.Model(inputs, L.Dense(10, activation="softmax", name="out")(x), name="resnet")


def nested():
    inner_in = keras.Input((32, 32, 8))
    inner = keras.Model(inner_in, L.BatchNormalization(name="inner_bn")(
        L.Conv2D(8, 3, padding="same", name="inner_conv")(inner_in)), name="inner")
    inputs = keras.Input((32, 32, 3))
    x = inner(L.Conv2D(8, 1, name="proj")(inputs))
    x = L.Flatten(name="flat")(x)
    return keras.Model(inputs, L.Dense(10, activation="softmax", name="out")(x), name="nested")


def saved(model) -> bytes:
    path = io.BytesIO()
    tmp = f"/tmp/{model.name}-{os.getpid()}.keras"
    model.save(tmp)
    with open(tmp, "rb") as f:
        path.write(f.read())
    os.unlink(tmp)
    return path.getvalue()


@pytest.mark.parametrize("build,bns,drops", [
    (vgg_like, {"bn_1": 8, "bn_2": 16}, {"drop": 0.5}),
    (resnet_like, {"b1_bn": 16, "b2_bn": 16}, {"head_drop": 0.3}),
    (nested, {"inner_bn": 8}, {}),
])
def test_switches_are_found_and_each_bn_off_removes_exactly_4_x_channels(build, bns, drops):
    model = build()
    found = surgery.switches(model)
    assert {b["name"]: b["channels"] for b in found["batchnorm"]} == bns
    assert {d["name"]: d["rate"] for d in found["dropout"]} == pytest.approx(drops)
    whole = model.count_params()
    for name, channels in bns.items():
        variant = surgery.ablate(model, bn_off=(name,))
        assert variant.count_params() == whole - 4 * channels  # gamma, beta, mean, variance
        out = variant.predict(keras.random.uniform((2, 32, 32, 3)), verbose=0)
        assert out.shape == (2, 10)  # the graph (skips, nesting) is still wired
        assert name in [layer.name for layer in surgery._walk(variant)]  # an Identity now
    everything_off = surgery.ablate(model, bn_off=tuple(bns))
    assert everything_off.count_params() == whole - 4 * sum(bns.values())


def test_a_dropout_layer_gets_its_own_rate_and_unknown_layers_are_refused():
    model = resnet_like()
    variant = surgery.ablate(model, dropout=(("head_drop", 0.1),))
    assert variant.get_layer("head_drop").rate == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="bn_off.*b1_bn, b2_bn"):
        surgery.ablate(model, bn_off=("nope",))
    with pytest.raises(ConfigError, match="layer_dropout"):
        surgery.ablate(model, dropout=(("b1_bn", 0.2),))


def test_an_uploaded_file_is_kept_by_content_so_a_changed_file_never_changes_an_old_run(home):
    first = networks.add_file("resnet.keras", saved(resnet_like()))
    second = networks.add_file("resnet.keras", saved(vgg_like()))  # same name, other network
    assert first.key != second.key and first.key.startswith("file:resnet@")
    assert networks.resolve(first.key).path.exists()  # the old bytes are still there
    keys = [n.key for n in networks.list_networks()]
    assert keys[:2] == ["seed", "conv_basics"] and second.key in keys and first.key not in keys


@pytest.mark.parametrize("name,data,field", [
    ("bad name!.keras", b"PK", "network"),
    ("empty.keras", b"", "network"),
    ("notes.keras", b"these are notes, not a model", "network"),
])
def test_bad_uploads_are_refused_naming_the_problem(home, name, data, field):
    with pytest.raises(ConfigError) as refused:
        networks.add_file(name, data)
    assert refused.value.field == field


def test_refusals_say_what_is_wrong_with_the_file(home):
    """A text file named .keras, a file not named .keras, a model whose input is not an image:
    each refused with what is wrong, not "File not found" or "a dataset of 100 images"."""
    with pytest.raises(ConfigError, match="name does not end in .keras"):
        networks.add_file("notes.txt", saved(vgg_like()))
    networks.networks_dir().mkdir(parents=True, exist_ok=True)
    (networks.networks_dir() / "notes.keras").write_text("these are notes")  # put there by hand
    (net,) = [n for n in networks.list_networks() if n.kind == "file"]
    with pytest.raises(ConfigError, match=r"a zip archive; this one cannot be read"):
        networks.probe(net.key, (32, 32, 3), 10)
    flat = keras.Sequential([keras.Input((100,)), L.BatchNormalization(name="bn"),
                             L.Dense(10, activation="softmax", name="out")], name="flat")
    one_d = networks.add_file("flat.keras", saved(flat))
    answer = networks.probe(one_d.key, (32, 32, 3), 10)
    assert not answer["ok"] and "takes images, height x width x channels" in answer["error"]
    assert "(100,), 1-D" in answer["error"]


def test_a_file_keras_will_not_load_safely_is_refused_when_added_not_when_picked(home):
    """A model with a Lambda layer (code, which safe mode refuses to run) is refused as it is
    added, and taken off the list; a good file stays."""
    lam = keras.Sequential([keras.Input((32, 32, 3)), L.Lambda(lambda x: x * 2, name="double"),
                            L.BatchNormalization(name="bn"), L.Flatten(name="flat"),
                            L.Dense(10, activation="softmax", name="out")], name="lam")
    added = networks.add_file("lam.keras", saved(lam))
    with pytest.raises(ConfigError, match="loads in safe mode"):
        networks.check_added(added)
    assert [n.title for n in networks.list_networks() if n.kind == "file"] == []
    good = networks.add_file("vgg.keras", saved(vgg_like()))
    networks.check_added(good)
    assert [n.title for n in networks.list_networks() if n.kind == "file"] == ["vgg"]


def with_head(activation):
    """vgg_like with its last Dense giving `activation` (None: a Softmax layer after it)."""
    inputs = keras.Input((32, 32, 3))
    x = L.BatchNormalization(name="bn")(L.Conv2D(4, 3, name="c")(inputs))
    x = L.Dropout(0.2, name="drop")(L.Flatten(name="flat")(x))
    x = L.Dense(10, activation=activation or "linear", name="out")(x)
    if activation is None:
        x = L.Softmax(name="probs")(x)
    return keras.Model(inputs, x, name="head")


def test_an_output_without_softmax_is_trained_from_logits_and_others_are_refused(home):
    """A network ending in logits (linear Dense) gets the cross-entropy taken from_logits (it was
    trained as if they were probabilities: test accuracy 0.12); softmax, as a Dense activation
    or a layer, is probabilities; a relu output cannot be trained with cross-entropy at all and
    is refused naming it."""
    from cnn_ablation.data.arrays import DatasetInfo
    from cnn_ablation.training.run import compiled_model

    assert surgery.output_kind(with_head("softmax")) == "probabilities"
    assert surgery.output_kind(with_head(None)) == "probabilities"
    assert surgery.output_kind(with_head("linear")) == "logits"
    with pytest.raises(ConfigError, match="ends in out, activation relu"):
        surgery.output_kind(with_head("relu"))
    info = DatasetInfo("synthetic", (32, 32, 3), tuple(map(str, range(10))), 90, 10)
    for activation, logits in (("linear", True), ("softmax", False)):
        net = networks.add_file(f"{activation}.keras", saved(with_head(activation)))
        model = compiled_model(RunConfig(network=net.key, dataset="synthetic"), info)
        assert model.loss.from_logits is logits
    relu = networks.add_file("relu.keras", saved(with_head("relu")))
    with pytest.raises(ConfigError, match="softmax probabilities or linear logits"):
        new_run(RunConfig(network=relu.key, dataset="synthetic"))


def zip_of(members: dict[str, int]) -> bytes:
    """A zip archive with members of that many zero bytes (deflated: a few KB per GB)."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, size in members.items():
            with archive.open(name, "w", force_zip64=True) as out:
                for start in range(0, size, 64 * 2**20):
                    out.write(bytes(min(64 * 2**20, size - start)))
    return buffer.getvalue()


def test_a_keras_archive_that_would_inflate_is_refused_from_its_directory_naming_the_limit(home):
    """A 1.5 MB `.keras` whose config.json inflates to 1.5 GB (the probe took 52 s and 3.8 GB
    before) is refused at upload from the zip's directory alone, nothing unpacked; so is one
    member packed 1,000:1; a file put in the networks folder by hand is checked before the probe
    starts Keras. Nothing is stored."""
    bomb = zip_of({"config.json": 1536 * 2**20, "metadata.json": 10})
    assert len(bomb) < 8 * 2**20  # (1.5 MB at zlib's level 9; level 1 is quicker to make)
    with pytest.raises(ConfigError, match=r"unpacks to 1,536 MB.*at most 256 MB"):
        networks.add_file("bomb.keras", bomb)
    packed = zip_of({"config.json": 8 * 2**20})
    with pytest.raises(ConfigError, match=r"config.json: .* unpacking to 8,388,608.*100 times"):
        networks.add_file("packed.keras", packed)
    assert not (networks.networks_dir() / "bomb.keras").exists()
    (networks.networks_dir()).mkdir(parents=True, exist_ok=True)
    (networks.networks_dir() / "bomb.keras").write_bytes(bomb)  # by hand, past the upload
    (net,) = [n for n in networks.list_networks() if n.kind == "file"]
    with pytest.raises(ConfigError, match="at most 256 MB"):
        networks.probe(net.key, (28, 28, 1), 10)


def test_a_folder_named_like_a_network_is_not_one(home, cli):
    (networks.networks_dir() / "x.keras").mkdir(parents=True)
    assert [n.kind for n in networks.list_networks()] == ["preset", "preset"]
    refused = cli("submit", "--network", "x", "--dataset", "synthetic")  # was a traceback
    assert refused.returncode == 2 and "network: 'x'" in refused.stderr, refused.stderr


def test_the_probe_counts_exactly_and_refusals_name_the_problem(home):
    net = networks.add_file("resnet.keras", saved(resnet_like()))
    answer = networks.probe(net.key, (32, 32, 3), 10, bn_off=("b1_bn",))
    assert answer["ok"] and answer["params"] == resnet_like().count_params() - 4 * 16
    assert [b["name"] for b in answer["batchnorm"]] == ["b1_bn", "b2_bn"]
    shapes = {name: shape for name, _, _, shape in answer["layers"]}
    assert all(shape for shape in shapes.values()), shapes  # the summary's output column
    assert shapes["b2_bn"] == [32, 32, 16] and next(reversed(shapes.values())) == [10]
    again = networks.probe(net.key, (32, 32, 3), 10, bn_off=("b1_bn",))
    assert again == answer  # from the cache
    wrong = networks.probe(net.key, (28, 28, 1), 10)
    assert not wrong["ok"] and "32x32x3" in wrong["error"]
    plain = keras.Sequential([keras.Input((32, 32, 3)), L.Flatten(), L.Dense(10)])
    bare = networks.add_file("plain.keras", saved(plain))
    refused = networks.probe(bare.key, (32, 32, 3), 10)
    assert not refused["ok"] and "BatchNormalization or Dropout" in refused["error"]
    with pytest.raises(ConfigError, match="a zip archive; this one cannot be read"):
        networks.add_file("fake.keras", b"PK\x03\x04 not really a keras archive")


def test_a_builder_from_the_operators_folder(home, monkeypatch, tmp_path):
    folder = tmp_path / "nets"
    folder.mkdir()
    (folder / "lab.py").write_text(
        "import keras\n"
        "def build_small(input_shape, num_classes):\n"
        "    i = keras.Input(input_shape)\n"
        "    x = keras.layers.BatchNormalization(name='bn')(keras.layers.Conv2D(4, 3, name='c')(i))\n"
        "    x = keras.layers.Flatten()(x)\n"
        "    return keras.Model(i, keras.layers.Dense(num_classes, activation='softmax')(x))\n"
        "def build_broken(input_shape, num_classes):\n"
        "    raise RuntimeError('not today')\n")
    monkeypatch.setenv("ABLATION_NETWORK_PATHS", str(folder))
    small = networks.find("lab:build_small")
    assert small.kind == "builder"
    config = RunConfig(network=small.key, dataset="synthetic", bn_off=("bn",), epochs=1)
    assert new_run(config).params == networks.probe(small.key, (32, 32, 3), 10)["base_params"] - 16
    broken = networks.find("lab:build_broken")
    with pytest.raises(ConfigError, match="not today"):
        new_run(RunConfig(network=broken.key, dataset="synthetic"))


def test_the_cli_queues_a_variant_of_your_network_and_refuses_unknown_layers(home, cli, engine):
    networks.add_file("resnet.keras", saved(resnet_like()))
    queued = cli("submit", "--network", "resnet", "--bn-off", "b2_bn", "--dropout",
                 "head_drop=0.2", "--dataset", "synthetic", "--epochs", "1")
    assert queued.returncode == 0, queued.stderr
    run = find_run(engine, int(queued.stdout.split()[0]))
    assert run.config["bn_off"] == ["b2_bn"] and run.config["layer_dropout"] == [["head_drop", 0.2]]
    assert run.params == resnet_like().count_params() - 64 and run.label.startswith("resnet")
    # no rate asked for: the run states the rate it trains with, the file's 0.3 (it used to
    # store "dropout": 0.5, "layer_dropout": [], a dropout it never used)
    plain = cli("submit", "--network", "resnet", "--dataset", "synthetic", "--epochs", "1")
    assert plain.returncode == 0, plain.stderr
    config = find_run(engine, int(plain.stdout.split()[0])).config
    assert config["layer_dropout"] == [["head_drop", 0.3]] and "dropout" not in config
    with pytest.raises(ConfigError, match="dropout: 0.3 .*layer_dropout"):
        RunConfig(network=config["network"], dataset="synthetic", dropout=0.3)
    refused = cli("submit", "--network", "resnet", "--bn-off", "b9_bn", "--dataset", "synthetic")
    assert refused.returncode == 2 and "bn_off" in refused.stderr and "b1_bn" in refused.stderr
    unknown = cli("submit", "--network", "nothing", "--dataset", "synthetic")
    assert unknown.returncode == 2 and "network" in unknown.stderr


@pytest.mark.slow
def test_a_custom_network_trains_one_epoch_through_a_real_worker(home, engine):
    net = networks.add_file("resnet.keras", saved(resnet_like()))
    (run_id,) = submit(engine, [RunConfig(network=net.key, dataset="synthetic:200", epochs=1,
                                          bn_off=("b1_bn",), batch_size=16)])
    env = {**os.environ, "ABLATION_HOME": str(home)}
    worker = subprocess.run([sys.executable, "-m", "cnn_ablation", "worker", "--once", "--gpus",
                             "none"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert worker.returncode == 0, worker.stdout[-2000:]
    run = find_run(engine, run_id)
    assert run.status == "completed", run.error
    assert run.test_accuracy is not None and json.loads(run.config_json)["network"] == net.key


def test_the_new_run_page_draws_your_networks_switches_with_exact_counts(home, engine):
    from streamlit.testing.v1 import AppTest

    net = networks.add_file("resnet.keras", saved(resnet_like()))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.selectbox(key="data").set_value("synthetic").run()
    at.selectbox(key="preset").set_value(net.key).run()
    assert not at.exception, at.exception
    assert {t.key for t in at.toggle} >= {"custom_bn_b1_bn", "custom_bn_b2_bn"}
    total = next(m for m in at.metric if m.label == "Total parameters")
    assert int(total.value.replace(",", "")) == resnet_like().count_params()
    summary = at.table[0].value  # every layer with its output shape, none blank
    assert (summary["output"] != "").all(), summary
    cards = [m.value for m in at.markdown if m.value.startswith("**")]
    assert not any(c.startswith("**Input**") for c in cards)  # no input card after the layers
    at.toggle(key="custom_bn_b2_bn").set_value(False).run()
    total = next(m for m in at.metric if m.label == "Total parameters")
    assert int(total.value.replace(",", "")) == resnet_like().count_params() - 64
    at.number_input(key="epochs").set_value(1).run()
    at.button(key="launch").click().run()
    (run,) = list_runs(engine)
    assert run.config["network"] == net.key and run.config["bn_off"] == ["b2_bn"]


# --- studies over your network's layers -----------------------------------------------------
def test_a_study_over_two_bn_layers_from_the_cli_reports_effects_named_by_the_layers(
        home, cli, engine, make_run):
    from cnn_ablation.storage.studies import list_studies
    from cnn_ablation.studies.spec import StudySpec

    net = networks.add_file("resnet.keras", saved(resnet_like()))
    base = RunConfig(network=net.key, dataset="synthetic:100", epochs=1, batch_size=16)
    base = RunConfig.from_json(new_run(base).config_json)  # as its runs state it: head_drop 0.3
    assert base.layer_dropout == (("head_drop", 0.3),)
    spec = StudySpec(base, {"bn:b1_bn": (True, False), "bn:b2_bn": (True, False)}, "full", 2)
    for cell, config in spec.runs():  # finished elsewhere: b1_bn off costs 5 points, b2_bn 1
        acc = (0.6 - (0 if cell.levels["bn:b1_bn"] else 0.05)
               - (0 if cell.levels["bn:b2_bn"] else 0.01) + 0.002 * config.seed)
        make_run(config, "completed", accuracies=[acc + 0.05])
    flags = ["--network", "resnet", "--dataset", "synthetic:100", "--epochs", "1",
             "--batch-size", "16", "--seeds", "2"]
    refused = cli("study", "create", *flags, "--factor", "bn:b1_bn", "--factor", "bn:b9_bn")
    assert refused.returncode == 2, refused.stderr
    assert "factor: 'bn:b9_bn'" in refused.stderr and "bn:b1_bn, bn:b2_bn" in refused.stderr
    bad_rate = cli("study", "create", *flags, "--factor", "dropout:head_drop=0.1,abc")
    assert bad_rate.returncode == 2 and "dropout:head_drop levels" in bad_rate.stderr
    assert list_studies(engine) == [] and len(list_runs(engine)) == 8  # nothing new

    made = cli("study", "create", *flags, "--factor", "bn:b1_bn", "--factor", "bn:b2_bn",
               "--name", "resnet bn")
    assert made.returncode == 0, made.stderr
    assert "4 cells x 2 seeds; queued 0 runs" in made.stdout  # the 8 finished runs count
    (study,) = list_studies(engine)
    shown = cli("study", "show", str(study.id), "--json")
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout)
    assert result["status"]["state"] == "complete"
    effects = {row["factor"]: row for row in result["effects"]}
    assert set(effects) == {"bn:b1_bn", "bn:b2_bn"}
    assert effects["bn:b1_bn"]["change"] == "on → off"
    assert effects["bn:b1_bn"]["effect"] == pytest.approx(-0.05, abs=1e-6)
    assert effects["bn:b2_bn"]["effect"] == pytest.approx(-0.01, abs=1e-6)
    text = cli("study", "show", str(study.id))
    assert "bn:b1_bn" in text.stdout and "bn:b2_bn" in text.stdout

    # and one that queues: a Dropout layer's rates, runs with their own switches and counts
    queued = cli("study", "create", *flags, "--seeds", "1", "--factor", "bn:b1_bn", "--factor",
                 "dropout:head_drop=0.1,0.3")
    assert queued.returncode == 0, queued.stderr
    # the two cells at the file's own rate (0.3) are runs the first study already has: their
    # configs state head_drop 0.3 too, so only the 0.1 cells are queued
    assert "4 cells x 1 seeds; queued 2 runs" in queued.stdout
    runs = {(tuple(r.config["bn_off"]), tuple(map(tuple, r.config["layer_dropout"]))): r
            for r in list_runs(engine) if r.study_id is not None and r.status == "queued"}
    assert set(runs) == {(off, (("head_drop", 0.1),)) for off in ((), ("b1_bn",))}
    assert runs[(("b1_bn",), (("head_drop", 0.1),))].params == resnet_like().count_params() - 64
    assert runs[((), (("head_drop", 0.1),))].params == resnet_like().count_params()


def test_the_studies_page_offers_your_networks_layers_as_factors(home, engine):
    from streamlit.testing.v1 import AppTest

    from cnn_ablation.storage.studies import list_studies

    net = networks.add_file("resnet.keras", saved(resnet_like()))
    at = AppTest.from_file(str(ROOT / "cnn_ablation" / "ui" / "studies.py"),
                           default_timeout=240).run()
    at.selectbox(key="study_dataset").set_value("synthetic").run()
    at.selectbox(key="study_network").set_value(net.key).run()
    assert not at.exception, at.exception
    picker = at.multiselect(key="study_net_bn_factors")
    assert picker.options == ["b1_bn (16 channels)", "b2_bn (16 channels)"]
    assert at.text_input(key="study_net_drop_head_drop").label.startswith(
        "Rates of Dropout head_drop")
    assert not [b for b in at.button if b.key and b.key.startswith("preset_")]  # chapter's only
    at.number_input(key="study_seeds").set_value(1)
    at.number_input(key="study_epochs").set_value(1)
    picker.set_value(["bn:b1_bn", "bn:b2_bn"]).run()
    assert "4 cells × 1 seeds = **4 runs**" in " ".join(m.value for m in at.markdown)
    at.button(key="start_custom").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (study,) = list_studies(engine)
    offs = sorted(tuple(r.config["bn_off"]) for r in list_runs(engine))
    assert offs == [(), ("b1_bn",), ("b1_bn", "b2_bn"), ("b2_bn",)]
    assert all(r.config["network"] == net.key and r.study_id == study.id
               for r in list_runs(engine))
