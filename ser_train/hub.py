"""The Hugging Face Hub: fetch a model folder (safetensors only) and publish one in a single commit.

A model is named by a local folder or a Hub repo id, optionally pinned as `user/name@revision`.
Hub downloads go through `snapshot_download`, so they land in (and are served from) the usual
Hugging Face cache and work offline once cached. Only the file patterns the caller asks for are
fetched; pickled weights (`*.bin`, `*.pt`) are never requested, because unpickling runs code.

Every way the Hub can fail (unknown repo, gated or private repo, offline with nothing cached,
no token, no permission, a failed upload) becomes a `HubError` with one sentence to act on.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import httpx2  # the HTTP client huggingface_hub uses; its TransportError means "no network"
from huggingface_hub import CommitOperationAdd, HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from ser_train.errors import HubError, ModelError

HUB_URL = "https://huggingface.co"
REVISION_SEPARATOR = "@"  # user/name@v1 pins a branch, tag or commit

# What goes up when a model folder is published: weights, configs and feature settings, metrics,
# the card and plots. Only files at the top of the folder: checkpoints (checkpoints/,
# checkpoint-N/, folds/) live in sub-folders, and pickled weights have other suffixes. Training
# bookkeeping with a published suffix is left out by name: optimizer and scheduler states,
# the Trainer's log and the runner's resume record (fold_result.json).
PUBLISHED_SUFFIXES = (".safetensors", ".json", ".md", ".png")
TRAINING_STATE_PREFIXES = ("optimizer", "scheduler", "trainer_state", "rng_state", "fold_result")
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")  # single file or shards
# What is fetched of a model: the configs (model, feature extractor) and the weights, nothing else:
# never pickled *.bin / *.pt weights, never custom code.
MODEL_FILE_PATTERNS = ["*.json", "*.safetensors"]
REQUIRED_FOR_PUBLISHING = ("config.json", "eval_results.json")  # beside one of SAFETENSORS_FILES


def split_revision(name: str) -> tuple[str, str | None]:
    """'user/name@v1' -> ('user/name', 'v1'); without '@' the revision is None (the main branch)."""
    repo_id, separator, revision = name.partition(REVISION_SEPARATOR)
    return repo_id, (revision if separator else None)


def is_revision_name(revision: str) -> bool:
    """Whether `revision` can name a branch, tag or commit by git's rules for a ref, in short (v1,
    main, refs/pr/3, a commit hash). The cache looks a revision up as a file under the repo's refs/
    folder, so an empty one, or one with '..' or a leading '/', must never reach it."""
    parts = revision.split("/")
    return all(part and not part.startswith(".") for part in parts) and ".." not in revision and not set(revision) & set(" ~^:?*[\\")


def fetch_model_files(name: str, patterns: list[str], hub_only: bool = False) -> Path:
    """The folder holding model `name`: the local folder itself, or its Hub snapshot.

    For a Hub repo only the files matching `patterns` are downloaded (or taken from the cache).
    With `hub_only`, `name` is a Hub id and nothing else, even when a folder of that name exists
    here: a server passes what a visitor typed this way, so no visitor can make it read its disk.
    """
    local = Path(name).expanduser()
    if not hub_only and local.is_dir():
        return local.resolve()
    if not hub_only and local.is_file():
        raise HubError(f"{name} is a file; a model is the folder that holds it, with the model's config.json: pass {local.parent}.")
    repo_id, revision = split_revision(name)
    try:
        validate_repo_id(repo_id)
        if revision is not None and not is_revision_name(revision):
            raise HFValidationError(f"'{revision}' names no revision")
    except HFValidationError:
        if hub_only:
            raise HubError(f"'{name}' is not a Hub model id; type it as user/name or user/name@revision.") from None
        raise HubError(
            f"There is no model folder '{name}', and it is not a Hub repo id (user/name or "
            "user/name@revision) either."
        ) from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except (HfHubHTTPError, LocalEntryNotFoundError, httpx2.TransportError) as error:
        raise HubError(_download_failure(error, repo_id, revision, hub_only)) from error


def _download_failure(error: Exception, repo_id: str, revision: str | None, hub_only: bool = False) -> str:
    """One sentence saying why `repo_id` could not be fetched (a local folder is only mentioned
    where one could have been used)."""
    no_folder = "" if hub_only else f"no local folder '{repo_id}' and "
    if isinstance(error, GatedRepoError):
        return (
            f"{repo_id} is a gated model: accept its conditions at {HUB_URL}/{repo_id}, "
            "then log in with `hf auth login` (or set HF_TOKEN)."
        )
    if isinstance(error, RepositoryNotFoundError):
        return (
            f"There is {no_folder}no model '{repo_id}' on the Hub that you can access: check the "
            "name, or log in with `hf auth login` if the repo is private."
        )
    if isinstance(error, RevisionNotFoundError):
        return f"{repo_id} has no branch, tag or commit called '{revision}'."
    if isinstance(error, HfHubHTTPError) and error.response.status_code == 401:
        if hub_only:  # a visitor of a server: the server's token is not theirs to fix
            return f"The Hub refused this server's token, so {repo_id} could not be fetched: pick a model this server offers."
        return (
            f"The Hub refused your token as invalid or expired, so {repo_id} could not be fetched: log in again "
            "with `hf auth login --force`, or set HF_TOKEN to a valid token (or unset it for a public model)."
        )
    if isinstance(error, LocalEntryNotFoundError):
        # The Hub answering with an error (a 5xx) also ends here: the cache was its fallback.
        answered = error.__cause__ if isinstance(error.__cause__, HfHubHTTPError) else None
        if constants.is_offline_mode():
            why, fix = "offline mode is on (HF_HUB_OFFLINE=1)", "run once with network access to download it"
        elif answered is not None:
            why, fix = f"the Hugging Face Hub answered with an error ({_http_reason(answered)})", "try again later"
        else:
            why, fix = "the Hugging Face Hub cannot be reached", "run once with network access to download it"
        shown = f"{repo_id}@{revision}" if revision else repo_id
        if hub_only:  # a visitor of a server: the server's network is not theirs to fix
            return (
                f"'{shown}' is not (completely) in the Hugging Face cache, and {why}, so it could not be "
                "checked or downloaded: check the id, or pick a model this server offers."
            )
        return (
            f"'{shown}' is not a local folder and is not (completely) in the Hugging Face cache, and {why}: "
            f"{fix}, or pass a local model folder."
        )
    if isinstance(error, httpx2.TransportError):
        return f"The download of {repo_id} failed because the network connection broke; try again."
    return f"The Hugging Face Hub answered with an error for {repo_id} ({_http_reason(error)})."


def publishable_files(model_dir: Path) -> list[Path]:
    """The files of `model_dir` that a published model consists of, sorted by name."""
    if not model_dir.is_dir():
        raise HubError(f"{model_dir} is not a folder; pass the folder a training run wrote.")
    missing = [name for name in REQUIRED_FOR_PUBLISHING if not (model_dir / name).is_file()]
    if not any((model_dir / name).is_file() for name in SAFETENSORS_FILES):
        missing.append(SAFETENSORS_FILES[0])
    if missing:
        raise HubError(
            f"{model_dir} is not a complete trained model (missing {', '.join(missing)}); "
            "publish the output folder of a finished training run."
        )
    return sorted(
        path
        for path in model_dir.iterdir()
        if path.is_file()
        and path.suffix in PUBLISHED_SUFFIXES
        and not path.name.startswith(TRAINING_STATE_PREFIXES)
    )


def push_model_dir(
    model_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    api: HfApi | None = None,
) -> str:
    """Publish a trained model folder to `repo_id` in one commit; return the commit's URL.

    The model card (README.md) is rendered for `repo_id` from the folder's eval_results.json
    straight into the commit: the folder itself is never written, so a push, failed or not,
    leaves it byte for byte as it was. The repo (and the branch `revision`) are created if
    needed. On any failure the `HubError` names the command to retry.
    """
    from ser_train.inference import load_model
    from ser_train.model_card import CARD_FILE, render_model_card

    model_dir = Path(model_dir)
    retry = retry_command(model_dir, repo_id, private, revision)
    check_repo_id(repo_id)
    files = publishable_files(model_dir)  # refuses an incomplete folder before rendering its card
    try:  # nor is a model published that would not load (a corrupt or truncated weights file)
        load_model(str(model_dir))
    except ModelError as error:
        raise ModelError(f"{error} Nothing was published.") from None
    card = render_model_card(model_dir, repo_id=repo_id)
    operations = [
        CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path))
        for path in files
        if path.name != CARD_FILE
    ]
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=str(card).encode()))
    api = api if api is not None else HfApi()
    try:
        api.whoami()  # fails fast on a missing or invalid token, or no network, before any change
        # private=None (not False) leaves a new repo to the namespace's default visibility.
        api.create_repo(repo_id, repo_type="model", private=private or None, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, repo_type="model", branch=revision, exist_ok=True)
        commit = api.create_commit(
            repo_id,
            operations,
            commit_message=f"Upload speech emotion model from {model_dir.name}",
            repo_type="model",
            revision=revision,
        )
    # ValueError: create_commit's report that the Hub's YAML check refused the card's metadata.
    except (LocalTokenNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, httpx2.TransportError, ValueError) as error:
        raise HubError(
            f"{_push_failure(error, repo_id)}; the model in {model_dir} is intact, so after fixing that "
            f"retry with: {retry}"
        ) from error
    return commit.commit_url


def check_can_push(repo_id: str) -> None:
    """Before a training that ends in a push to `repo_id`: a Hub error now (a malformed id, no or
    an invalid token, offline, no network) instead of after the training. Nothing is changed."""
    check_repo_id(repo_id)
    try:
        HfApi().whoami()
    except (LocalTokenNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, httpx2.TransportError) as error:
        raise HubError(f"{_push_failure(error, repo_id)}; nothing was trained, so fix that and start again.") from error


def check_repo_id(repo_id: str) -> None:
    """A HubError unless `repo_id` is a Hub repo id (user/name)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(f"'{repo_id}' is not a Hub repo id; use the form user/name.") from None


def retry_command(model_dir: Path, repo_id: str, private: bool, revision: str | None) -> str:
    """The exact `push` command that repeats this upload."""
    command = ["python", "-m", "ser_train", "push", "--model-dir", str(model_dir), "--repo-id", repo_id]
    if private:
        command.append("--private")
    if revision is not None:
        command += ["--revision", revision]
    return shlex.join(command)


def _push_failure(error: Exception, repo_id: str) -> str:
    """Why an upload to `repo_id` failed, as the first half of a sentence."""
    if isinstance(error, LocalTokenNotFoundError):
        return "No Hugging Face token was found (log in with `hf auth login` or set HF_TOKEN)"
    if isinstance(error, OfflineModeIsEnabled):
        return "Nothing can be uploaded while offline mode is on (unset HF_HUB_OFFLINE)"
    if isinstance(error, httpx2.TransportError):
        return "The Hugging Face Hub cannot be reached (check the network connection)"
    if not isinstance(error, HfHubHTTPError):
        return f"The Hub refused the upload to {repo_id}: {' '.join(str(error).split())}"
    status = error.response.status_code
    if status == 401:
        return "The Hub refused your token as invalid or expired (log in again with `hf auth login --force`)"
    if status == 403:
        namespace = repo_id.split("/")[0]
        return f"Your token may not write to {repo_id} (it needs write access to the '{namespace}' namespace)"
    return f"The upload to {repo_id} failed ({_http_reason(error)})"


def _http_reason(error: HfHubHTTPError) -> str:
    """'HTTP 500: <what the server said>' from a Hub HTTP error."""
    message = error.server_message or str(error).strip().splitlines()[0]
    return f"HTTP {error.response.status_code}: {message}"
