"""Optional experiment tracking: TensorBoard event files and MLflow runs read back and compared with the
run's own event log; off by default; a dead server or a missing package never stops training."""
from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import pytest

from core.storage import runs
from core.train import tracking
from core.config import RunConfig
from core.techniques import fit

# CI installs both (requirements-dev.txt); without them only the tests that need them are skipped
needs_tb = pytest.mark.skipif(find_spec("tensorboard") is None, reason="pip install tensorboard")
needs_mlflow = pytest.mark.skipif(find_spec("mlflow") is None, reason="pip install mlflow-skinny")


def _epochs(run_dir) -> list[dict]:
    return [e for e in runs.Run(run_dir).events() if e["type"] == "epoch"]


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(s.step, s.value) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@needs_tb
def test_tensorboard_scalars_equal_the_logged_epochs(digits_dir, tiny_config):
    result = fit(tiny_config(digits_dir, epochs=2, trainable="last-1", unfreeze_after=1, tensorboard=True))
    assert result["status"] == "finished"
    logdir = runs.Run(result["run_dir"]).path / tracking.TB_DIR
    scalars = _scalars(logdir)
    epochs = _epochs(result["run_dir"])
    assert len(epochs) == 2
    for name in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "lrs/head"):
        assert [step for step, _ in scalars[name]] == [1, 2], name
        expected = [e["lrs"]["head"] if name == "lrs/head" else e[name] for e in epochs]
        assert [v for _, v in scalars[name]] == pytest.approx(expected, rel=1e-6), name  # float32 in the file
    # the unfreeze mark: more parameters learn from epoch 2 on
    (unfreeze,) = [e for e in runs.Run(result["run_dir"]).events() if e["type"] == "unfreeze"]
    trainable = dict(scalars["params_trainable"])
    assert trainable[2] == unfreeze["params_trainable"] > trainable[1]
    assert not any(e["type"] == "warning" for e in runs.Run(result["run_dir"]).events())


@needs_mlflow
def test_mlflow_local_store_holds_params_history_and_status(digits_dir, tiny_config, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    result = fit(tiny_config(digits_dir, epochs=2, mlflow_uri=uri, mlflow_experiment="tracking-test", name="mlf"))
    assert result["status"] == "finished"
    run = runs.Run(result["run_dir"])
    assert not any(e["type"] == "warning" for e in run.events()), [e for e in run.events() if e["type"] == "warning"]
    state = json.loads((run.path / tracking.STATE_FILE).read_text())

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tracking-test")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.info.run_id == state["mlflow_run_id"]
    assert found.info.status == "FINISHED"
    assert found.info.run_name == "mlf"
    assert found.data.tags["transfer_studio.run_id"] == run.id
    params = found.data.params
    assert params["backbone"] == "efficientnet_lite0" and params["epochs"] == "2" and params["lr"] == "0.01"
    assert params["mlflow_experiment"] == "tracking-test"

    epochs = _epochs(run.path)
    for name in ("train_loss", "val_loss", "val_acc", "lr"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(found.info.run_id, name))
        assert history == [(e["epoch"], pytest.approx(e[name])) for e in epochs], name
    assert found.data.metrics["result.val_accuracy"] == pytest.approx(result["val_accuracy"])
    assert found.data.metrics["result.best_epoch"] == result["best_epoch"]

    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.json", "result.json", "model_card.json", "model"} <= artifacts
    card = json.loads(open(client.download_artifacts(found.info.run_id, "model_card.json", str(tmp_path))).read())
    assert card["backbone"] == "efficientnet_lite0" and card["classes"] == result["classes"]
    weights = client.download_artifacts(found.info.run_id, "model/best.safetensors", str(tmp_path))
    assert open(weights, "rb").read() == run.best_weights.read_bytes()


@needs_mlflow
def test_stopped_run_is_killed_in_mlflow(digits_dir, tiny_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from core.train.loop import Control

    uri = (tmp_path / "mlruns").as_uri()
    control = Control()
    control.stop()
    result = fit(tiny_config(digits_dir, mlflow_uri=uri), control=control)
    assert result["status"] == "stopped"
    run_id = json.loads((runs.Run(result["run_dir"]).path / tracking.STATE_FILE).read_text())["mlflow_run_id"]
    assert MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "KILLED"


def test_default_config_tracks_nothing(digits_dir, tiny_config, monkeypatch):
    made = []

    class Refuse:
        def __init__(self, *a, **k):
            made.append(type(self).__name__)
            raise AssertionError("a tracking backend was opened with tracking off")
    monkeypatch.setattr(tracking, "_TensorBoard", Refuse)
    monkeypatch.setattr(tracking, "_MLflow", Refuse)
    config = tiny_config(digits_dir)
    assert not config.tensorboard and config.mlflow_uri == ""
    result = fit(config)
    assert result["status"] == "finished" and made == []
    path = runs.Run(result["run_dir"]).path
    assert not (path / tracking.TB_DIR).exists() and not (path / tracking.STATE_FILE).exists()


@needs_tb
@needs_mlflow
def test_unreachable_server_warns_and_the_run_finishes(digits_dir, tiny_config, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv(tracking.TRACKING_TIMEOUT_ENV, "20")
    events = []
    result = fit(tiny_config(digits_dir, epochs=2, mlflow_uri="http://127.0.0.1:9", tensorboard=True), events.append)
    assert result["status"] == "finished" and len([e for e in events if e["type"] == "epoch"]) == 2
    warnings = [e for e in events if e["type"] == "warning"]
    assert len(warnings) == 1, warnings  # one warning, then MLflow is off for the rest of the run
    assert warnings[0]["source"] == "tracking"
    assert "http://127.0.0.1:9" in warnings[0]["message"] and "mlflow server" in warnings[0]["message"]
    logged = runs.Run(result["run_dir"]).events()
    assert logged[-1]["type"] == "end" and logged[-1]["status"] == "finished"  # the warning came before the end
    assert "val_acc" in _scalars(runs.Run(result["run_dir"]).path / tracking.TB_DIR)  # TensorBoard went on


def test_missing_package_warns_at_start_and_the_run_finishes(digits_dir, tiny_config, monkeypatch):
    real = tracking.find_spec
    monkeypatch.setattr(tracking, "find_spec", lambda name: None if name == "tensorboard" else real(name))
    config = tiny_config(digits_dir, tensorboard=True)
    assert tracking.missing(config.tensorboard, config.mlflow_uri) == [
        "TensorBoard logging is on but the tensorboard package is not installed; "
        "run `pip install tensorboard` or turn TensorBoard off"]
    events = []
    result = fit(config, events.append)
    assert result["status"] == "finished"
    first_warning = next(i for i, e in enumerate(events) if e["type"] == "warning")
    assert first_warning < next(i for i, e in enumerate(events) if e["type"] == "start")
    assert "pip install tensorboard" in events[first_warning]["message"]
    assert not (runs.Run(result["run_dir"]).path / tracking.TB_DIR).exists()


@needs_tb
def test_a_failing_writer_warns_once_and_training_goes_on(digits_dir, tiny_config, monkeypatch):
    calls = []

    def broken(self, ev):
        calls.append(ev["epoch"])
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(tracking._TensorBoard, "epoch", broken)
    events = []
    result = fit(tiny_config(digits_dir, epochs=2, tensorboard=True), events.append)
    assert result["status"] == "finished" and calls == [1]  # switched off after the first failure
    (warning,) = [e for e in events if e["type"] == "warning"]
    assert "No space left on device" in warning["message"] and "TensorBoard" in warning["message"]


@pytest.mark.parametrize("fields, message", [
    ({"mlflow_uri": "localhost:5000"}, "mlflow_uri must be empty (MLflow off) or a tracking URI"),
    ({"mlflow_uri": "http://:5000"}, "names no host"),
    ({"tensorboard": "yes"}, "tensorboard must be true or false"),
    ({"mlflow_uri": "http://127.0.0.1:5000", "mlflow_experiment": ""}, "mlflow_experiment must be a non-empty"),
])
def test_bad_tracking_settings_are_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig(data="x", **fields).validate()


def test_tracking_fields_round_trip_and_old_configs_load():
    c = RunConfig(data="x", tensorboard=True, mlflow_uri="sqlite:///m.db", mlflow_experiment="exp")
    back = RunConfig.from_json(c.to_json())
    assert (back.tensorboard, back.mlflow_uri, back.mlflow_experiment) == (True, "sqlite:///m.db", "exp")
    old = json.loads(c.to_json())
    for k in ("tensorboard", "mlflow_uri", "mlflow_experiment"):
        del old[k]
    loaded = RunConfig.from_dict(old).validate()
    assert (loaded.tensorboard, loaded.mlflow_uri, loaded.mlflow_experiment) == (False, "", "transfer-studio")


def test_cli_flags_map_into_the_config():
    from core import cli

    a = cli.parser().parse_args(["train", "--data", "x", "--tensorboard", "--mlflow-uri", "http://127.0.0.1:5000",
                                 "--mlflow-experiment", "cli-exp"])
    c = cli._config_from_flags(a)
    assert (c.tensorboard, c.mlflow_uri, c.mlflow_experiment) == (True, "http://127.0.0.1:5000", "cli-exp")
    plain = cli._config_from_flags(cli.parser().parse_args(["train", "--data", "x"]))
    assert (plain.tensorboard, plain.mlflow_uri) == (False, "")
    assert cli._config_from_flags(cli.parser().parse_args(["train", "--data", "x", "--no-tensorboard"])).tensorboard \
        is False


def test_epoch_metrics_flatten_nested_fields_and_skip_counters():
    ev = {"type": "epoch", "time": 1.0, "epoch": 2, "epochs": 3, "best": True, "train_loss": 0.5, "val_acc": 1,
          "lrs": {"head": 0.01}, "tasks": {"colour (main)": {"val_acc": 0.25}}, "note": "x", "bad": float("nan")}
    assert tracking.epoch_metrics(ev) == {"train_loss": 0.5, "val_acc": 1.0, "lrs/head": 0.01,
                                          "tasks/colour _main_/val_acc": 0.25}


@needs_mlflow
def test_a_resumed_run_continues_the_same_mlflow_run(digits_dir, tiny_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from core.train.loop import Control

    uri = (tmp_path / "mlruns").as_uri()
    control = Control()
    config = tiny_config(digits_dir, epochs=2, mlflow_uri=uri)
    run = runs.create(config)
    first = fit(config, lambda ev: ev["type"] == "epoch" and control.stop(), control, run)
    assert first["status"] == "stopped"
    assert fit(run.config(), run=run, resume=True)["status"] == "finished"

    client = MlflowClient(tracking_uri=uri)
    (only,) = client.search_runs([client.get_experiment_by_name("transfer-studio").experiment_id],
                                 filter_string=f"tags.`transfer_studio.run_id` = '{run.id}'")
    assert only.info.status == "FINISHED"
    epochs = _epochs(run.path)
    history = sorted((m.step, m.value) for m in client.get_metric_history(only.info.run_id, "val_acc"))
    assert history == [(e["epoch"], pytest.approx(e["val_acc"])) for e in epochs] and len(history) == 2


@needs_tb
@needs_mlflow
def test_train_page_switches_reach_the_run_and_survive_a_reload(shapes_dir, tmp_path):
    import shutil

    from conftest import wait_for_run
    from streamlit.testing.v1 import AppTest

    from core.data import edits as de

    name = de.unique_name("tracking-shapes")
    shutil.copytree(shapes_dir, de.root() / name)

    def tab(**query) -> AppTest:
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "streamlit_app.py"), default_timeout=60)
        for k, v in query.items():
            at.query_params[k] = v
        at.run()
        at.switch_page("pages/4_train.py").run()
        assert not at.exception, at.exception
        return at

    at = tab(ds=name)
    assert at.checkbox(key="train_tensorboard").value is False and at.checkbox(key="train_mlflow").value is False
    at.checkbox(key="train_mlflow").check().run()
    at.text_input(key="train_mlflow_uri").input("localhost:5000").run()
    assert "mlflow_uri must be empty (MLflow off) or a tracking URI" in "\n".join(e.value for e in at.error)
    assert at.button(key="train_start").disabled

    uri = (tmp_path / "mlruns").as_uri()
    at.text_input(key="train_mlflow_uri").input(uri)
    at.checkbox(key="train_tensorboard").check()
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_image_size").set_value(64)
    at.selectbox(key="train_augment").set_value("none")
    at.run()
    assert not at.error, [e.value for e in at.error]
    at.button(key="train_start").click().run()
    job = at.session_state["job"]
    assert wait_for_run(job) == "finished"
    run = runs.open_run(job)
    cfg = run.config()
    assert (cfg.tensorboard, cfg.mlflow_uri, cfg.mlflow_experiment) == (True, uri, "transfer-studio")
    assert (run.path / tracking.TB_DIR).is_dir() and (run.path / tracking.STATE_FILE).exists()

    reloaded = tab(ds=name, sid=at.query_params["sid"])
    assert reloaded.checkbox(key="train_tensorboard").value is True
    assert reloaded.text_input(key="train_mlflow_uri").value == uri


def test_train_page_says_when_a_turned_on_package_is_missing(shapes_dir, monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    from core.data import edits as de

    monkeypatch.setattr(tracking, "find_spec", lambda name: None)  # the page runs in this process
    name = de.unique_name("tracking-missing")
    shutil.copytree(shapes_dir, de.root() / name)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "streamlit_app.py"), default_timeout=60)
    at.query_params["ds"] = name
    at.run()
    at.switch_page("pages/4_train.py").run()
    assert not at.warning
    at.checkbox(key="train_tensorboard").check().run()
    warnings = [w.value for w in at.warning]
    assert any("pip install tensorboard" in w for w in warnings), warnings
    assert not at.button(key="train_start").disabled  # a missing tracking package never blocks training
