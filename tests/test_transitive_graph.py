"""The graph of transitive invariance (hf_ssl/transitive): the KCF tracker on synthetic motion with known ground
truth and on a target that vanishes, the clique finder against brute force, transitivity on a hand-made graph, and
the pair dataset built end to end from real videos and images with a tiny random model."""

import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from hf_ssl.cli import main
from hf_ssl.data import make_image_processor
from hf_ssl.models import MultiTaskConfig, MultiTaskModel
from hf_ssl.transitive import (
    STATS_FILE,
    TransitiveGraphArguments,
    build_pair_dataset,
    chance_purity,
    clique_edges,
    find_cliques,
    inter_instance_cliques,
    track,
    transitive_pairs,
)

from .conftest import REPO, SHARED_DATA, TINY_BACKBONE

KINDS = ("intra", "inter", "transitive")

TARGET = 24


def texture(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Random blocks of `cell` pixels, softened: a texture a correlation filter can lock on."""
    blocks = np.kron(rng.random((height // cell + 2, width // cell + 2)), np.ones((cell, cell)))
    soft = (blocks[:-2, :-2] + blocks[1:-1, 1:-1] + blocks[2:, 2:] + blocks[:-2, 2:] + blocks[2:, :-2]) / 5
    return soft[:height, :width]


def moving_target(seed: int, frames: int = 30, size: int = 128, vanish_at: int | None = None):
    """Grayscale frames of a textured square moving along a known curve over a textured background, with noise;
    from `vanish_at` on the square is gone. Returns (frames, true centres (x, y))."""
    rng = np.random.default_rng(seed)
    background = 0.6 * texture(rng, size, size, 6)
    target = texture(rng, TARGET, TARGET, 3)
    path = np.array([(40 + 1.7 * t, 60 + 12 * np.sin(t / 6)) for t in range(frames)]).round()
    video = []
    for t, (x, y) in enumerate(path.astype(int)):
        frame = background.copy()
        if vanish_at is None or t < vanish_at:
            frame[y - TARGET // 2 : y + TARGET // 2, x - TARGET // 2 : x + TARGET // 2] = target
        video.append(frame + rng.normal(0, 0.02, frame.shape))
    return np.array(video), path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kcf_follows_a_target_on_a_known_path(seed):
    frames, truth = moving_target(seed)
    result = track(frames, truth[0], (TARGET, TARGET))
    error = np.linalg.norm(result.centers - truth, axis=1)
    assert error.mean() < 1.5 and error.max() < 3, error
    # the target moves 49 px in x: a tracker that stood still would be far off
    assert np.abs(truth[-1] - truth[0]).max() > 40
    assert result.min_psr > 10


def test_kcf_confidence_drops_when_the_target_vanishes():
    frames, truth = moving_target(3, vanish_at=15)
    result = track(frames, truth[0], (TARGET, TARGET))
    assert result.psr[1:15].min() > 10  # sure while the target is there
    assert result.psr[15] < 6 and result.min_psr < 6  # the detection right after it vanished is not


def brute_force_cliques(neighbours: list[list[int]], size: int) -> list[tuple[int, ...]]:
    """Every `size`-subset whose members are pairwise in each other's lists: the definition, checked directly."""
    return [
        group
        for group in itertools.combinations(range(len(neighbours)), size)
        if all(b in neighbours[a] and a in neighbours[b] for a, b in itertools.combinations(group, 2))
    ]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("size", [3, 4])
def test_find_cliques_matches_brute_force_on_random_knn_lists(seed, size):
    rng = np.random.default_rng(seed)
    # 24 nodes in 3 groups of 8, each listing 6 of the 7 others of its group (one in ten: random nodes): many
    # cliques, not all subsets of a group
    neighbours = []
    for i in range(24):
        group = [j for j in range(8 * (i // 8), 8 * (i // 8) + 8) if j != i]
        pool = group if rng.random() < 0.9 else [j for j in range(24) if j != i]
        neighbours.append([i, *rng.choice(pool, 6, replace=False).tolist()])  # the node itself, as faiss returns
    expected = brute_force_cliques(neighbours, size)
    assert len(expected) > 3
    assert find_cliques(neighbours, size) == expected


def test_find_cliques_needs_every_link_both_ways():
    # 0..3 all list each other except that 3 does not list 0: no 4-clique, but the triangles without that link
    neighbours = [[1, 2, 3], [0, 2, 3], [0, 1, 3], [1, 2]]
    assert find_cliques(neighbours, 4) == []
    assert find_cliques(neighbours, 3) == [(0, 1, 2), (1, 2, 3)]


def test_transitivity_adds_the_pairs_between_two_instances():
    # tracks 0-10 and 1-11; image patch 2 without a track; inter edges 0-1 and 1-2
    intra = [(0, 10), (11, 1)]
    inter = [(0, 1), (1, 2)]
    added = transitive_pairs(inter, intra)
    # 0-1 gives <0,11>, <10,1>, <10,11>; 1-2 gives <11,2>; nothing already an edge comes back
    assert added == {(0, 11), (1, 10), (10, 11), (2, 11)}
    assert transitive_pairs(inter, []) == set()
    assert transitive_pairs([], intra) == set()


def test_inter_instance_cliques_find_tight_groups_in_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))
    features = np.repeat(centres, 6, axis=0) + 0.05 * rng.normal(size=(30, 16))
    labels = np.repeat(np.arange(5), 6)
    # one cluster: each group of 6 is its own 5-NN, so all C(6, 4) = 15 subsets of each are cliques, none mixed
    cliques, _ = inter_instance_cliques(features, num_clusters=1, k=5, clique_size=4, seed=0)
    assert len(cliques) == 5 * 15
    assert all(len({labels[i] for i in clique}) == 1 for clique in cliques)
    # several clusters: cliques never cross a cluster boundary
    cliques, clusters = inter_instance_cliques(features, num_clusters=3, k=5, clique_size=4, seed=0)
    assert cliques and all(len({clusters[i] for i in clique}) == 1 for clique in cliques)
    assert clique_edges([(0, 1, 2)]) == {(0, 1), (0, 2), (1, 2)}


@pytest.fixture(scope="module")
def tiny_feature_model(tmp_path_factory) -> str:
    """A randomly initialised multi_task model with the tiny backbone and a 32 px image processor, saved."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("feature_model")
    MultiTaskModel(MultiTaskConfig(backbone_config=TINY_BACKBONE)).save_pretrained(path)
    make_image_processor(32).save_pretrained(path)
    return str(path)


def check_pair_dataset(output_dir: Path, stats: dict, patch_size: int) -> list[dict]:
    """The written dataset loads as the pair format says and agrees with its statistics; returns its rows."""
    assert json.loads((output_dir / STATS_FILE).read_text()) == json.loads(json.dumps(stats))
    stream = datasets.load_dataset(str(output_dir), streaming=True)["train"]
    # the pair format that the transitive-invariance method reads, written out here rather than imported
    assert stream.features == datasets.Features(
        {
            "image_a": datasets.Image(),
            "image_b": datasets.Image(),
            "patch_a": datasets.Value("int64"),
            "patch_b": datasets.Value("int64"),
            "kind": datasets.Value("string"),
            "label_a": datasets.Value("int64"),
            "label_b": datasets.Value("int64"),
        }
    )
    rows = list(stream)
    assert len(rows) == stats["rows"] == sum(stats["edges"].values())
    assert Counter(row["kind"] for row in rows) == {k: v for k, v in stats["edges"].items() if v}
    assert stats["nodes"]["track_first"] == stats["nodes"]["track_last"] == stats["edges"]["intra"]
    assert stats["edges"]["intra"] == sum(source["kept"] for source in stats["tracks"].values())
    pixels, labels = {}, {}
    for row in rows:
        for side in "ab":
            patch = np.asarray(row[f"image_{side}"])
            assert patch.shape == (patch_size, patch_size, 3)
            # a patch index always shows the same patch with the same label
            assert np.array_equal(pixels.setdefault(row[f"patch_{side}"], patch), patch)
            assert labels.setdefault(row[f"patch_{side}"], row[f"label_{side}"]) == row[f"label_{side}"]
    # transitivity recomputed from the rows: the pairs between the instances of each inter edge's ends
    edges = {kind: {tuple(sorted((r["patch_a"], r["patch_b"]))) for r in rows if r["kind"] == kind} for kind in KINDS}
    partner = {a: b for a, b in edges["intra"]} | {b: a for a, b in edges["intra"]}
    expected = {
        tuple(sorted((x, y))) for a, b in edges["inter"] for x in {a, partner.get(a, a)} for y in {b, partner.get(b, b)}
    } - edges["inter"]
    assert edges["transitive"] == expected
    assert all(labels[a] == labels[b] for a, b in edges["intra"])
    for kind in KINDS:
        same = [labels[a] == labels[b] for a, b in edges[kind]]
        assert stats["pair_purity"][kind] == (pytest.approx(np.mean(same)) if same else None)
    assert stats["cliques"] >= 1 and 0 <= stats["clique_purity"] <= 1
    assert 0 < stats["pair_purity_by_chance"] <= 1
    return rows


def test_pair_dataset_from_the_shipped_samples(tiny_feature_model, tmp_path):
    # three videos of the shipped sample and a corrupt one, which is counted and skipped
    videos = tmp_path / "videos" / "train"
    for path in sorted((REPO / "data" / "moving-imagenette-sample" / "train").glob("*/*.mp4"))[:3]:
        (videos / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, videos / path.parent.name / path.name)
    (videos / "tench").mkdir(exist_ok=True)
    (videos / "tench" / "corrupt.mp4").write_bytes(b"not a video")
    args = TransitiveGraphArguments(
        video_datasets=[str(tmp_path / "videos")],
        image_dataset=str(REPO / "data" / "cifar10-sample"),
        feature_model=tiny_feature_model,
        patch_size=32,
        image_resize=64,
        max_images=24,
        num_clusters=1,
    )
    stats = build_pair_dataset(args, tmp_path / "pairs")
    assert stats["tracks"]["videos"]["videos"] == 4 and stats["tracks"]["videos"]["unreadable_videos"] == 1
    assert stats["edges"]["intra"] > 0 and stats["edges"]["inter"] > 0 and stats["edges"]["transitive"] > 0
    assert stats["nodes"]["image"] == stats["nodes"]["images_read"] == 24
    check_pair_dataset(tmp_path / "pairs", stats, 32)
    # an existing pair dataset is kept unless overwrite is asked for
    with pytest.raises(ValueError, match=r"^output_dir: .* is not empty; set overwrite=True"):
        build_pair_dataset(args, tmp_path / "pairs")
    args.overwrite = True
    again = build_pair_dataset(args, tmp_path / "pairs")

    def graph(stats: dict) -> dict:  # the statistics of the graph, without the timings and the arguments
        return {key: value for key, value in stats.items() if key not in ("seconds", "arguments")}

    assert graph(again) == graph(stats)  # the build is deterministic


@pytest.mark.skipif(
    not all((SHARED_DATA / name).is_dir() for name in ("clips-2cls", "moving-imagenette", "imagenette-160")),
    reason=f"the real datasets are not in {SHARED_DATA.resolve()}",
)
def test_pair_dataset_from_real_clips_and_imagenette(tiny_feature_model, tmp_path):
    args = TransitiveGraphArguments(
        video_datasets=[str(SHARED_DATA / "moving-imagenette"), str(SHARED_DATA / "clips-2cls")],
        image_dataset=str(SHARED_DATA / "imagenette-160"),
        feature_model=tiny_feature_model,
        max_videos=2,
        max_images=16,
        num_clusters=1,
    )
    stats = build_pair_dataset(args, tmp_path / "pairs")
    assert set(stats["tracks"]) == {"moving-imagenette", "clips-2cls"}
    rows = check_pair_dataset(tmp_path / "pairs", stats, 48)
    # one label namespace: Imagenette's classes, then the clips' classes
    assert stats["label_names"][:10] == datasets.load_dataset_builder(args.image_dataset).info.features["label"].names
    assert set(stats["label_names"][10:]) <= {"doing_exercises", "typing"}
    assert {row["label_a"] for row in rows} <= set(range(len(stats["label_names"])))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("video_datasets", ["no/such/videos"], "video_datasets: no/such/videos is not a folder"),
        ("image_dataset", "no/such/images", "image_dataset: no/such/images does not exist"),
        ("feature_model", "no/such/model", "feature_model: no/such/model is not a checkpoint folder"),
    ],
)
def test_bad_paths_are_one_line_errors_naming_the_field(tiny_feature_model, tmp_path, field, value, message):
    args = TransitiveGraphArguments(
        video_datasets=[str(REPO / "data" / "moving-imagenette-sample")],
        image_dataset=str(REPO / "data" / "cifar10-sample"),
        feature_model=tiny_feature_model,
    )
    setattr(args, field, value)
    with pytest.raises(ValueError, match=f"^{message}$"):
        build_pair_dataset(args, tmp_path / "pairs")
    assert not (tmp_path / "pairs").exists()


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="^clique_size \\(12\\) can be at most k \\+ 1 \\(11\\)$"):
        TransitiveGraphArguments(clique_size=12)
    with pytest.raises(ValueError, match="^track_length must be >= 2"):
        TransitiveGraphArguments(track_length=1)


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    # the shipped samples, not the default ../shared/data sets, which a fresh machine does not have
    data = ["--video_datasets", str(REPO / "data" / "moving-imagenette-sample")]
    data += ["--image_dataset", str(REPO / "data" / "cifar10-sample")]
    assert main(["transitive-graph", str(tmp_path / "pairs"), *data, "--feature_model", "no/such/model"]) == 2
    assert capsys.readouterr().err == (
        "hf-ssl transitive-graph: error: feature_model: no/such/model is not a checkpoint folder\n"
    )
    assert main(["transitive-graph", "--k", "3"]) == 2
    assert "the first argument must be OUTPUT_DIR" in capsys.readouterr().err


def test_chance_purity_counts_pairs_of_distinct_patches():
    # labels 0, 0, 1 and an unknown: of the 3 pairs of known labels, 1 shares its label
    assert chance_purity(np.array([0, 0, 1, -1])) == pytest.approx(1 / 3)
    assert chance_purity(np.array([2, -1])) is None
