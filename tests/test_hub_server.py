"""The local Hub server, driven by the real `huggingface_hub` client (and transformers) over HTTP: no mocks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import save_file

from tests.hub_server import LocalHub


@pytest.fixture
def api(local_hub: LocalHub) -> HfApi:
    return HfApi(token=local_hub.token)  # no endpoint: it must come from the patched HF_ENDPOINT constants


def _weights(path: Path, value: float) -> bytes:
    save_file({"w": torch.full((4, 4), value)}, str(path))
    return path.read_bytes()


def test_fixture_points_clients_at_a_fresh_hub(local_hub: LocalHub, api: HfApi) -> None:
    assert os.environ["HF_ENDPOINT"] == constants.ENDPOINT == local_hub.url
    assert os.environ["HF_HUB_DISABLE_XET"] == "1" and "HF_TOKEN" not in os.environ
    assert constants.HF_HUB_CACHE == os.environ["HF_HUB_CACHE"]
    assert Path(constants.HF_HUB_CACHE).is_relative_to(local_hub.hf_home)
    assert api.whoami()["name"] == "tester"
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong").whoami()
    assert err.value.response.status_code == 401


def test_create_repo(local_hub: LocalHub, api: HfApi) -> None:
    url = api.create_repo("tester/demo")
    assert url.repo_id == "tester/demo" and url.startswith(local_hub.url)
    assert api.repo_exists("tester/demo") and not api.repo_exists("tester/nope")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("tester/demo")
    assert err.value.response.status_code == 409
    assert api.create_repo("tester/demo", exist_ok=True).repo_id == "tester/demo"
    assert api.create_repo("solo").repo_id == "tester/solo"  # no namespace: the token's user
    # Like huggingface.co, a new repo has one commit with a .gitattributes that routes *.safetensors through LFS.
    assert api.list_repo_files("tester/demo") == [".gitattributes"]
    assert [c.title for c in api.list_repo_commits("tester/demo")] == ["initial commit"]


def test_upload_download_and_revisions(local_hub: LocalHub, api: HfApi, tmp_path: Path) -> None:
    repo = "tester/roundtrip"
    api.create_repo(repo)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("hello hub\n")
    (folder / "sub" / "deep.txt").write_text("nested\n")
    old = _weights(folder / "model.safetensors", 1.0)
    first = api.upload_folder(repo_id=repo, folder_path=folder, commit_message="first upload")

    # The binary went through the LFS batch API and the pre-signed PUT; the text was inlined in the commit.
    assert len(local_hub.requests_to("POST", f"/{repo}.git/info/lfs/objects/batch")) == 1
    [put] = local_hub.requests_to("PUT", "/_lfs/upload/")
    assert put.status == 200 and not put.authorized  # signed URL, no token: like S3
    assert [r.status for r in local_hub.requests_to("POST", f"/api/models/{repo}/commit/main")] == [200]
    info = api.model_info(repo, files_metadata=True)
    by_name = {s.rfilename: s for s in info.siblings}
    assert set(by_name) == {".gitattributes", "notes.txt", "sub/deep.txt", "model.safetensors"}
    assert by_name["model.safetensors"].lfs is not None and by_name["model.safetensors"].lfs.size == len(old)
    assert by_name["notes.txt"].lfs is None and by_name["notes.txt"].size == len("hello hub\n")
    assert info.sha == first.oid and len(first.oid) == 40

    # Downloads land in the fresh cache with identical bytes.
    path = hf_hub_download(repo, "model.safetensors")
    assert Path(path).read_bytes() == old and Path(path).is_relative_to(constants.HF_HUB_CACHE)
    assert Path(hf_hub_download(repo, "sub/deep.txt")).read_text() == "nested\n"

    # A second commit changes the weights; the first commit stays readable.
    new = _weights(tmp_path / "new.safetensors", 2.0)
    second = api.upload_file(
        path_or_fileobj=new, path_in_repo="model.safetensors", repo_id=repo, commit_message="new weights"
    )
    assert second.oid != first.oid
    assert Path(hf_hub_download(repo, "model.safetensors")).read_bytes() == new
    assert Path(hf_hub_download(repo, "model.safetensors", revision=first.oid)).read_bytes() == old
    commits = api.list_repo_commits(repo)
    assert [c.commit_id for c in commits[:2]] == [second.oid, first.oid]
    assert [c.title for c in commits] == ["new weights", "first upload", "initial commit"]
    assert api.list_repo_refs(repo).branches[0].target_commit == second.oid

    # Deleting a file only affects the new commit; snapshots follow the revision they ask for.
    api.create_commit(repo, [CommitOperationDelete("notes.txt")], commit_message="drop notes")
    assert "notes.txt" not in api.list_repo_files(repo)
    assert api.list_repo_files(repo, revision=first.oid) == sorted(by_name)
    snapshot = Path(snapshot_download(repo, revision=first.oid))
    assert (snapshot / "notes.txt").read_text() == "hello hub\n"
    assert (snapshot / "model.safetensors").read_bytes() == old

    # Re-uploading an unchanged file is a no-op commit the client skips (the preupload oid matches).
    api.create_commit(repo, [CommitOperationAdd("sub/deep.txt", b"nested\n")], commit_message="same")
    assert len(api.list_repo_commits(repo)) == 4
    assert all(r.status < 500 for r in local_hub.requests)


def test_missing_repo_file_and_revision_raise_the_clients_errors(api: HfApi) -> None:
    api.create_repo("tester/errors")
    api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id="tester/errors")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("tester/missing", "a.txt")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("tester/missing")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("tester/errors", "b.txt")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("tester/errors", "a.txt", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_commits("tester/errors", revision="0" * 40)


def test_writes_need_the_token(local_hub: LocalHub, api: HfApi) -> None:
    api.create_repo("tester/locked")
    anonymous = HfApi(token=False)
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id="tester/locked")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        anonymous.create_repo("tester/other")
    assert err.value.response.status_code == 401
    assert not api.repo_exists("tester/other")
    refused = [r for r in local_hub.requests if r.status == 401]
    assert refused and not any(r.authorized for r in refused)
    assert anonymous.list_repo_files("tester/locked") == [".gitattributes"]  # reads are public


def test_refs_tree_private_repos_and_deletion(local_hub: LocalHub, api: HfApi) -> None:
    repo = "tester/refs"
    api.create_repo(repo)
    v1 = api.upload_file(path_or_fileobj=b"1", path_in_repo="dir/a.txt", repo_id=repo, commit_message="v1").oid
    api.create_tag(repo, tag="v1.0", revision=v1)
    api.create_branch(repo, branch="dev")
    v2 = api.upload_file(path_or_fileobj=b"2", path_in_repo="dir/b.txt", repo_id=repo, revision="dev").oid
    refs = api.list_repo_refs(repo)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": v1, "dev": v2}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0", v1)]
    assert Path(hf_hub_download(repo, "dir/b.txt", revision="dev")).read_bytes() == b"2"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "dir/b.txt", revision="v1.0")
    tree = {e.path: e for e in api.list_repo_tree(repo, revision="dev", expand=True)}
    assert set(tree) == {".gitattributes", "dir"} and tree["dir"].last_commit.oid == v2
    files = api.get_paths_info(repo, ["dir/a.txt", "nope"], revision="dev", expand=True)
    assert [(f.path, f.size, f.last_commit.title) for f in files] == [("dir/a.txt", 1, "v1")]
    with pytest.raises(HfHubHTTPError) as err:  # stale parent: someone committed in between
        api.create_commit(repo, [CommitOperationDelete("dir/a.txt")], commit_message="x", parent_commit="0" * 40)
    assert err.value.response.status_code == 412

    api.create_repo("tester/secret", private=True)
    assert api.model_info("tester/secret").private
    assert not local_hub.api(token=False).repo_exists("tester/secret")  # hidden from anonymous readers
    api.delete_repo(repo)
    assert not api.repo_exists(repo)


def test_transformers_and_model_card_load_from_the_hub(local_hub: LocalHub, api: HfApi, tmp_path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    config = transformers.ResNetConfig(hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], embedding_size=8)
    model = transformers.ResNetModel(config)
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "README.md").write_text("---\nlicense: mit\ntags: [ssl]\n---\n# Tiny ResNet\n")
    repo = "tester/tiny-resnet"
    api.create_repo(repo)
    sha = api.upload_folder(repo_id=repo, folder_path=tmp_path / "model").oid
    api.upload_file(path_or_fileobj=b"later\n", path_in_repo="later.txt", repo_id=repo)  # move main past `sha`

    loaded = transformers.AutoModel.from_pretrained(repo, revision=sha)
    assert type(loaded) is transformers.ResNetModel
    expected = model.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in loaded.state_dict().items())
    assert transformers.AutoConfig.from_pretrained(repo, revision=sha).hidden_sizes == [8, 8, 8, 8]
    card = ModelCard.load(repo)
    assert card.data.license == "mit" and "# Tiny ResNet" in card.text
    # transformers probes optional files this way: a missing one is a clean 404 `EntryNotFound`, hence None.
    probe = transformers.utils.cached_file(
        repo, "adapter_config.json", revision=sha, _raise_exceptions_for_missing_entries=False
    )
    assert probe is None
    assert [r.status for r in local_hub.requests_to("HEAD", "/adapter_config.json")] == [404]
    assert all(r.status < 500 for r in local_hub.requests)


def test_a_subprocess_reaches_the_hub(local_hub: LocalHub, api: HfApi) -> None:
    api.create_repo("tester/cli")
    api.upload_file(path_or_fileobj=b"from a child\n", path_in_repo="a.txt", repo_id="tester/cli")
    code = "from huggingface_hub import hf_hub_download; print(open(hf_hub_download('tester/cli', 'a.txt')).read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "from a child"
    assert any(Path(local_hub.hf_home, "hub").glob("models--tester--cli/snapshots/*/a.txt"))
