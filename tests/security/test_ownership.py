"""Every stored thing has an owner: runs, datasets, uploads, adapted backbones, drafts and download links are
listed, opened, changed and deleted by their owner only, in the pages and in the facade the pages call."""
from __future__ import annotations

import asyncio
import json
import zipfile

import pytest
from starlette.requests import Request

from accounts import ISSUER, key, make_adapted, make_dataset, make_run, tab, texts
from core.app import services
from core.data import edits as de
from core.data import ingest
from core.storage import downloads, owners, workspace
from pages.signin import request_owner

ALICE, BOB = key("alice"), key("bob")


@pytest.fixture(scope="module")
def alice(shapes_dir):
    """Alice's dataset, finished run and adapted backbone."""
    ds = make_dataset("alice-data", shapes_dir, ALICE)
    return {"ds": ds, "run": make_run(ALICE, de.root() / ds, name="alice run"),
            "adapted": make_adapted(ALICE, de.root() / ds, ds)}


@pytest.fixture(scope="module")
def bob(digits_dir):
    ds = make_dataset("bob-data", digits_dir, BOB)
    return {"ds": ds, "run": make_run(BOB, de.root() / ds, name="bob run")}


def test_two_signed_in_users_see_only_their_own_runs_datasets_and_adapted_backbones(alice, bob):
    for me, mine, theirs in (("alice", alice, bob), ("bob", bob, alice)):
        runs_page = tab(me, "7_runs")
        ids = list(runs_page.dataframe[0].value["id"])
        assert mine["run"].id in ids and theirs["run"].id not in ids
        data = tab(me, "1_data")
        options = data.selectbox(key="data_existing").options
        assert mine["ds"] in options and theirs["ds"] not in options
    backbones = tab("alice", "2_backbone").dataframe[0].value.index
    adapted = f"adapted:efficientnet_lite0:{alice['adapted'].id}"
    assert adapted in backbones
    assert adapted not in tab("bob", "2_backbone").dataframe[0].value.index
    assert [a["name"] for a in services.backbone_table(BOB) if a["weights"] == "adapted"] == []


def test_a_deep_link_to_another_users_run_or_dataset_says_not_found(alice, bob):
    run, ds = alice["run"], alice["ds"]
    at = tab("bob", job=run.id, ds=ds)  # bob opens alice's link: the app's first page says what happened
    assert f"Run {run.id} was not found in your workspace" in texts(at)
    assert "job" not in at.session_state and "ds" not in at.session_state
    at.switch_page("pages/4_train.py").run()
    assert not at.exception and "This step needs a dataset" in texts(at)
    assert run.id[:15] not in texts(at) and ds not in texts(at)
    for page in ("5_evaluate", "6_export", "8_distill"):  # carol has no run at all; alice's is not offered
        other = tab("carol", page, job=run.id)
        assert "needs a trained model" in texts(other) or "needs a teacher" in texts(other)
        assert run.id[:15] not in texts(other) and not list(other.selectbox)


def test_the_facade_answers_not_found_for_another_users_run_dataset_upload_or_backbone(alice, bob, tmp_path):
    run, ds = alice["run"], alice["ds"]
    for call in (lambda: services.open_run(run.id, BOB),
                 lambda: services.open_run(run.path, BOB),
                 lambda: services.evaluate_run(run.path, BOB),
                 lambda: services.export_files(run.path, BOB),
                 lambda: services.card_markdown(run.path, BOB),
                 lambda: services.export_format(run.path, "onnx", BOB),
                 lambda: services.delete_run(run.id, BOB),
                 lambda: services.resume_run(None, run.id, BOB),
                 lambda: services.dataset_dir(ds, BOB),
                 lambda: services.dataset_action("delete_class", ds, "circle", owner=BOB),
                 lambda: services.to_config(services.defaults(), de.root() / ds, BOB),
                 lambda: services.to_config({**services.defaults(),
                                             "backbone": f"adapted:efficientnet_lite0:{alice['adapted'].id}"},
                                            de.root() / bob["ds"], BOB),
                 lambda: services.to_config({**services.defaults(),  # the text encoders' adapted names too
                                             "backbone": f"adapted-text:all_minilm_l6_v2:{alice['adapted'].id}"},
                                            de.root() / bob["ds"], BOB),
                 lambda: de.import_zip(tmp_path / "x.zip", ds, append=True, owner=BOB)):
        with pytest.raises(ValueError, match="not found in your workspace"):
            call()
    assert run.path.is_dir() and (de.root() / ds / "circle").is_dir()  # nothing was deleted
    # a signed-in user names data in the workspace only, never a path on the server
    with pytest.raises(ValueError, match="not found in your workspace"):
        services.to_config(services.defaults(), tmp_path, BOB)
    # the single-user app (no owner) sees none of it either: owned things are not ownerless things
    with pytest.raises(ValueError, match="not found"):
        services.open_run(run.id, None)
    assert ds not in services.my_datasets(None) and run.id not in [r.id for r in services.my_runs(None)]
    assert services.dataset_dir(ds, ALICE) == de.root() / ds


def test_a_multitask_upload_belongs_to_its_uploader(bob, shapes_dir):
    folder = workspace.sub("uploads") / "multitask-test"
    folder.mkdir()
    owners.record(folder, BOB)
    src = folder / "upload.zip"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("labels.csv", "filename,shape,size\n" + "".join(
            f"{p.name},{p.parent.name},{'big' if i % 2 else 'small'}\n"
            for i, p in enumerate(sorted(shapes_dir.rglob("*.png")))))
        for p in sorted(shapes_dir.rglob("*.png")):
            z.write(p, p.name)
    assert set(services.task_table(src, owner=BOB)["tasks"]) == {"shape", "size"}
    with pytest.raises(ValueError, match="not found in your workspace"):
        services.task_table(src, owner=ALICE)


def test_a_shared_draft_link_gives_the_other_user_a_draft_of_their_own(alice, bob):
    alice_tab = tab("alice", "4_train", ds=alice["ds"])
    sid = alice_tab.session_state["sid"]
    alice_tab.number_input(key="train_epochs").set_value(7).run()
    saved = (workspace.sub("drafts") / f"{sid}.json").read_text()
    assert json.loads(saved)["owner"] == ALICE and json.loads(saved)["epochs"] == 7
    bob_tab = tab("bob", "4_train", sid=sid, ds=bob["ds"])  # alice pasted her URL where bob could read it
    assert bob_tab.session_state["sid"] != sid
    fresh = tab("bob", "4_train", ds=bob["ds"])  # what bob sees with no link at all: his own recipe's choice
    assert bob_tab.number_input(key="train_epochs").value == fresh.number_input(key="train_epochs").value != 7
    bob_tab.number_input(key="train_epochs").set_value(2).run()
    assert (workspace.sub("drafts") / f"{sid}.json").read_text() == saved  # alice's draft is untouched
    with pytest.raises(ValueError, match="not found"):
        services.save(sid, services.defaults(), BOB)


def test_each_user_gets_a_sample_of_their_own_and_imports_record_the_owner():
    a = de.import_sample("shapes", per_class=4, owner=key("sam"))
    b = de.import_sample("shapes", per_class=4, owner=key("tess"))
    assert a != b and de.import_sample("shapes", per_class=4, owner=key("sam")) == a  # reused, not copied again
    assert owners.owner_of(de.root() / a) == key("sam") and owners.owner_of(de.root() / b) == key("tess")
    # the owner record is the workspace's, not data: the health report does not list it as a skipped file
    index = de.scan(a)
    assert not [s for s in index.skipped if owners.FILE in s.path]
    assert not [w for w in ingest.health_report(index)["warnings"] if "skipped" in w.lower()]


def test_an_unreadable_owner_record_hands_the_folder_to_nobody(tmp_path):
    folder = tmp_path / "thing"
    folder.mkdir()
    assert owners.visible(folder, None) and not owners.visible(folder, ALICE)  # no record: single-user's
    owners.record(folder, ALICE)
    assert owners.visible(folder, ALICE) and not owners.visible(folder, BOB) and not owners.visible(folder, None)
    (folder / owners.FILE).write_text('{"owner": ')  # torn or hand-edited
    assert not any(owners.visible(folder, who) for who in (ALICE, BOB, None))


def _get(route, token: str, cookies: dict | None = None):
    header = "; ".join(f"{k}={v}" for k, v in (cookies or {}).items()).encode("latin-1")
    scope = {"type": "http", "method": "GET", "path": downloads.url(token), "path_params": {"token": token},
             "headers": [(b"cookie", header)] if cookies else [], "query_string": b""}
    return asyncio.run(route.endpoint(Request(scope)))


def _sign_in_cookie(sub: str, **claims) -> dict:
    """The cookie Streamlit's OIDC callback sets, signed with this process's cookie secret."""
    from streamlit.web.server.server_util import get_cookie_secret
    from streamlit.web.server.starlette.starlette_app_utils import create_signed_value

    value = json.dumps({"iss": ISSUER, "sub": sub, **claims, "origin": "http://localhost:8501", "is_logged_in": True})
    return {"_streamlit_user": create_signed_value(get_cookie_secret(), "_streamlit_user", value).decode("latin-1")}


def test_a_download_link_is_served_only_to_the_signed_in_user_it_was_issued_to(alice):
    weights = alice["run"].best_weights
    token = downloads.issue(weights, "m.safetensors", ALICE)
    (route,) = downloads.routes(identify=lambda request: request_owner(request.cookies))
    assert _get(route, token, _sign_in_cookie("alice")).status_code == 200
    impostor = _sign_in_cookie("mallory", email="alice@example.com", name="alice@example.com")
    forged = {"_streamlit_user": _sign_in_cookie("alice")["_streamlit_user"][:-4] + "AAAA"}
    for cookies in (_sign_in_cookie("bob"), impostor, forged, None):
        assert _get(route, token, cookies).status_code == 404
    assert downloads.grant(token, owner=BOB) is None and downloads.grant(token) is None
