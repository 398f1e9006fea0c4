"""Publishing a training output folder to the Hub: the files a user needs and nothing else.

The token comes from where huggingface_hub looks for it (`HF_TOKEN`, `hf auth login`); no hf_ssl argument or
file holds it, so it cannot end up in a recipe, a log or a card.
"""

import logging
import pathlib

from huggingface_hub import CommitInfo, HfApi, get_token

from ..run_layout import PRIVATE_FILES, PUBLISHED_FILES
from .card import render_model_card

logger = logging.getLogger(__name__)


def push_to_hub(
    output_dir: str | pathlib.Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    render_card: bool = True,
) -> CommitInfo:
    """Render the model card of `output_dir` and upload the published files to `repo_id` as one commit.

    The repository is created if needed. Returns the commit (its `oid` is the revision to pin for loading back:
    `AutoModel.from_pretrained(repo_id, revision=commit.oid)`).
    """
    folder = pathlib.Path(output_dir)
    for required in ("config.json", "model.safetensors"):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"{folder} has no {required}: push the output_dir of a finished training run")
    if get_token() is None:  # before anything is rendered or sent (the Hub's answer would be a bare 401)
        raise ValueError("pushing needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    if render_card:
        render_model_card(folder, repo_id=repo_id)
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        revision=revision,
        allow_patterns=PUBLISHED_FILES,
        ignore_patterns=PRIVATE_FILES,
        commit_message=commit_message or f"Upload {folder.name} with hf_ssl",
    )
    logger.info("pushed %s to %s (commit %s)", folder, repo_id, commit.oid)
    return commit
