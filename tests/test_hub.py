"""Publishing: exactly the model's files go up in one commit; every failure is one clear sentence.

The real `HfApi` client talks to a local stand-in of the Hub API, so the requests are the ones a
real push sends (whoami, create repo, card check, pre-upload, one commit).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket

import pytest
from huggingface_hub import HfApi, ModelCard, constants

from hub_helpers import HubStandIn, Route, make_tiny_wav2vec2, online_hub, write_real_eval_results  # noqa: F401 (fixture)
from ser_train.cli import main
from ser_train.errors import HubError, ModelError
from ser_train.hub import push_model_dir
from ser_train.model_card import render_model_card, write_model_card

REPO_ID = "someone/ser-wav2vec2"
REPO_API = f"/api/models/{REPO_ID}"
TOKEN = "hf_test_token"
PUBLISHED = {
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "eval_results.json",
    "training_args.json",
    "confusion_matrix.png",
    "README.md",
}
# What a training run also leaves in its folder and must never be published.
NOT_PUBLISHED = (
    "checkpoints/checkpoint-10/model.safetensors",
    "checkpoints/checkpoint-10/optimizer.pt",
    "folds/fold-1/eval_results.json",
    "optimizer.pt",
    "optimizer.safetensors",
    "trainer_state.json",
    "fold_result.json",
    "pytorch_model.bin",
    "train.log",
)


def regular_uploads(request_body: bytes) -> dict:
    """The pre-upload answer: every file goes inline in the commit (no LFS/Xet storage)."""
    files = json.loads(request_body)["files"]
    return {"files": [{"path": file["path"], "uploadMode": "regular", "shouldIgnore": False} for file in files]}


COMMIT_OID = "c" * 40
# Every step of a push accepted; failure cases replace one route.
ACCEPTING_HUB = {
    "GET /api/whoami-v2": Route(200, {"name": "someone", "type": "user"}),
    "POST /api/repos/create": Route(200, {"url": f"https://huggingface.co/{REPO_ID}"}),
    f"POST {REPO_API}/branch/": Route(200, {}),
    "POST /api/validate-yaml": Route(200, {"errors": [], "warnings": []}),
    f"POST {REPO_API}/preupload/": Route(200, regular_uploads),
    f"POST {REPO_API}/commit/": Route(
        200, {"commitUrl": f"https://huggingface.co/{REPO_ID}/commit/{COMMIT_OID}", "commitOid": COMMIT_OID}
    ),
}


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    folder = make_tiny_wav2vec2(tmp_path_factory.mktemp("trained") / "ser-wav2vec2")
    write_real_eval_results(folder, [[5, 6]])
    for name in NOT_PUBLISHED:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"training state")
    return folder


@pytest.fixture
def model_dir(trained_model, tmp_path):
    """A fresh copy per test, its card rendered as training renders it: for no repo yet."""
    folder = shutil.copytree(trained_model, tmp_path / "ser-wav2vec2")
    write_model_card(folder)
    return folder


def commits(stand_in: HubStandIn) -> list[dict[str, bytes]]:
    """The files of every commit request the stand-in received: {path in repo: content}."""
    found = []
    for (method, path), body in zip(stand_in.requests, stand_in.bodies):
        if method == "POST" and path.startswith(f"{REPO_API}/commit/"):
            lines = [json.loads(line) for line in body.splitlines()]
            found.append(
                {line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines if line["key"] == "file"}
            )
    return found


def request_json(stand_in: HubStandIn, method: str, path_prefix: str) -> dict:
    (body,) = [b for (m, p), b in zip(stand_in.requests, stand_in.bodies) if m == method and p.startswith(path_prefix)]
    return json.loads(body)


def folder_state(folder) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_push_uploads_exactly_the_model_files_in_one_commit(model_dir, online_hub):
    hub = online_hub(ACCEPTING_HUB)
    before = folder_state(model_dir)
    url = push_model_dir(model_dir, REPO_ID, api=HfApi(endpoint=hub.url, token=TOKEN))

    (files,) = commits(hub)
    assert set(files) == PUBLISHED
    for name, content in files.items():
        if name != "README.md":  # the card is rendered for the repo, the folder's is left alone
            assert content == (model_dir / name).read_bytes()
    assert folder_state(model_dir) == before
    assert files["README.md"] == str(render_model_card(model_dir, repo_id=REPO_ID)).encode()
    assert hub.requests[-1] == ("POST", f"{REPO_API}/commit/main")
    created = request_json(hub, "POST", "/api/repos/create")
    assert (created["organization"], created["name"], created["type"]) == ("someone", "ser-wav2vec2", "model")
    assert "visibility" not in created  # the namespace's default
    card = ModelCard(files["README.md"].decode())
    assert card.data.model_name == "ser-wav2vec2" and card.data.license == "cc-by-nc-sa-4.0"
    assert url == f"https://huggingface.co/{REPO_ID}/commit/{COMMIT_OID}"


def test_push_to_a_private_repo_on_a_branch(model_dir, online_hub):
    hub = online_hub(ACCEPTING_HUB)
    push_model_dir(model_dir, REPO_ID, private=True, revision="experiment", api=HfApi(endpoint=hub.url, token=TOKEN))

    assert request_json(hub, "POST", "/api/repos/create")["visibility"] == "private"
    assert ("POST", f"{REPO_API}/branch/experiment") in hub.requests
    assert hub.requests[-1] == ("POST", f"{REPO_API}/commit/experiment")
    assert len(commits(hub)) == 1


def test_an_incomplete_folder_is_refused_before_anything_is_sent(model_dir, online_hub):
    (model_dir / "eval_results.json").unlink()
    hub = online_hub(ACCEPTING_HUB)
    with pytest.raises(HubError, match="not a complete trained model \\(missing eval_results.json\\)"):
        push_model_dir(model_dir, REPO_ID, api=HfApi(endpoint=hub.url, token=TOKEN))
    assert hub.requests == []


def test_a_malformed_repo_id_is_refused(model_dir):
    with pytest.raises(HubError, match="'not a repo id' is not a Hub repo id"):
        push_model_dir(model_dir, "not a repo id")


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


FAILURES = {
    # case: (routes replaced in ACCEPTING_HUB, token, online, expected sentence)
    "no token": ({}, None, True, r"No Hugging Face token was found \(log in with `hf auth login` or set HF_TOKEN\)"),
    "offline": ({}, TOKEN, False, r"Nothing can be uploaded while offline mode is on"),
    "network down": (None, TOKEN, True, r"The Hugging Face Hub cannot be reached"),
    "invalid token": (
        {"GET /api/whoami-v2": Route(401, {"error": "Invalid credentials in Authorization header"})},
        TOKEN,
        True,
        r"The Hub refused your token as invalid or expired",
    ),
    "permission denied": (
        {"POST /api/repos/create": Route(403, {"error": "You don't have the rights to create a model under this namespace"})},
        TOKEN,
        True,
        r"Your token may not write to someone/ser-wav2vec2 \(it needs write access to the 'someone' namespace\)",
    ),
    "upload error": (
        {f"POST {REPO_API}/preupload/": Route(400, {"error": "Repository storage limit reached"})},
        TOKEN,
        True,
        r"The upload to someone/ser-wav2vec2 failed \(HTTP 400: Repository storage limit reached\)",
    ),
    "card refused": (
        {"POST /api/validate-yaml": Route(400, {"errors": [{"message": '"license" must be one of [...]'}]})},
        TOKEN,
        True,
        r"The Hub refused the upload to someone/ser-wav2vec2: Invalid metadata in README.md. - \"license\" must be",
    ),
}


@pytest.mark.parametrize("case", FAILURES)
def test_push_failures_leave_the_folder_and_say_how_to_retry(case, model_dir, online_hub, monkeypatch):
    replaced, token, online, sentence = FAILURES[case]
    hub = online_hub({**ACCEPTING_HUB, **replaced}) if replaced is not None else None
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", not online)
    before = folder_state(model_dir)

    with pytest.raises(HubError, match=sentence) as raised:
        push_model_dir(model_dir, REPO_ID, api=HfApi(endpoint=hub.url if hub else closed_port_url(), token=token))

    assert folder_state(model_dir) == before
    assert str(raised.value).endswith(
        f"the model in {model_dir} is intact, so after fixing that retry with: "
        f"python -m ser_train push --model-dir {model_dir} --repo-id {REPO_ID}"
    )
    if hub:
        assert commits(hub) == []


def test_a_model_that_would_not_load_is_not_published(model_dir, online_hub):
    """A QA pass pushed a folder whose model.safetensors was corrupt: the push went on to the Hub."""
    hub = online_hub(ACCEPTING_HUB)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy broken off halfway
    before = folder_state(model_dir)

    with pytest.raises(ModelError, match=r"its weights could not be loaded .* Nothing was published\.$"):
        push_model_dir(model_dir, REPO_ID, api=HfApi(endpoint=hub.url, token=TOKEN))
    assert hub.requests == [] and folder_state(model_dir) == before


def test_push_command_fails_with_exit_code_and_sentence(model_dir, capsys):
    # No token in the test environment: the real client stops before any request.
    before = folder_state(model_dir)
    code = main(["push", "--model-dir", str(model_dir), "--repo-id", REPO_ID, "--private", "--revision", "exp"])
    err = capsys.readouterr().err

    assert code == 2
    assert err.startswith("error: No Hugging Face token was found")
    assert err.strip().endswith(f"--repo-id {REPO_ID} --private --revision exp")
    assert folder_state(model_dir) == before


def test_train_with_push_to_hub_hears_of_a_hub_problem_before_it_trains(synthetic_ravdess, tmp_path, capsys, monkeypatch):
    from ser_train.training import runner

    def no_training(*args, **kwargs):
        raise AssertionError("the run started before the Hub was checked")

    monkeypatch.setattr(runner, "run", no_training)
    output_dir = tmp_path / "model"
    command = ["train", "cnn", "--dataset", str(synthetic_ravdess), "--output-dir", str(output_dir), "--test-actors", "6"]
    code = main([*command, "--push-to-hub", "--hub-model-id", REPO_ID])  # no token in the test environment
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: No Hugging Face token was found") and "nothing was trained" in err
    assert not output_dir.exists()
