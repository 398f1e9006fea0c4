"""Publishing a training output folder to the Hub: the files a user needs and nothing else.

The token comes from where huggingface_hub looks for it (`HF_TOKEN`, `hf auth login`); no hf_ssl argument or
file holds it, so it cannot end up in a recipe, a log or a card.
"""

import logging
import pathlib

from huggingface_hub import CommitInfo, HfApi, get_token

from ..run_layout import CARD_FILE, PRIVATE_FILES, PUBLISHED_FILES
from .card import render_model_card
from .card_file import is_rendered_unedited

logger = logging.getLogger(__name__)


def push_to_hub(
    output_dir: str | pathlib.Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    render_card: bool | None = None,
) -> CommitInfo:
    """Upload the published files of `output_dir` to `repo_id` as one commit, with its model card.

    The repository (and branch) is created first, so a push that cannot proceed (no token, no permission) leaves
    the folder untouched. The card (README.md) is rendered when there is none or when it is exactly as hf_ssl
    rendered it; a card the user edited is pushed as it is. `render_card=True` always re-renders it, False never.
    Returns the commit (its `oid` is the revision to pin for loading back:
    `AutoModel.from_pretrained(repo_id, revision=commit.oid)`).
    """
    folder = pathlib.Path(output_dir)
    for required in ("config.json", "model.safetensors"):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"{folder} has no {required}: push the output_dir of a finished training run")
    if get_token() is None:  # before anything is rendered or sent (the Hub's answer would be a bare 401)
        raise ValueError("pushing needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    card = folder / CARD_FILE
    if render_card is None:
        render_card = not card.is_file() or is_rendered_unedited(card)
        if not render_card:
            logger.warning("%s was edited since hf_ssl rendered it: pushed as it is (--render-card re-renders)", card)
    if render_card:
        render_model_card(folder, repo_id=repo_id)
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
