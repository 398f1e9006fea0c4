"""`hf-ssl` command line: thin wrappers that parse arguments and call the library.

    hf-ssl train RECIPE [--field value ...]            (RECIPE: a YAML file, or a shipped recipe's name)
    hf-ssl evaluate --model PATH_OR_REPO --dataset_name PATH_OR_ID [--protocols knn,linear,layers,nmi,transfer ...]
    hf-ssl card OUTPUT_DIR [--repo-id ID]
    hf-ssl push OUTPUT_DIR --repo-id ID [--revision BRANCH] [--private] [--commit-message MSG]
    hf-ssl convert --from SOURCE CHECKPOINT OUTPUT_DIR   (an official checkpoint -> an hf_ssl checkpoint)
    hf-ssl transitive-graph OUTPUT_DIR [--field value ...]  (transitive invariance's graph -> a parquet pair dataset)

A bad recipe or argument ends with one line naming the problem (exit code 2), not a traceback. `hf-ssl --help`
and `hf-ssl COMMAND --help` describe every option.
"""

import argparse
import contextlib
import logging
import pathlib
import sys
from collections.abc import Iterator

from . import __version__
from .resources import resolve_recipe, shipped_recipes
from .run_layout import CARD_FILE

HELP_FLAGS = ("-h", "--help")


def _train_parser():
    from transformers import HfArgumentParser

    from .training.arguments import ARGUMENT_CLASSES

    return HfArgumentParser(
        ARGUMENT_CLASSES,
        prog="hf-ssl train",
        usage="hf-ssl train RECIPE [--field value ...]",
        description="Pre-train a self-supervised model. RECIPE is a YAML file of the fields below, or the name of a "
        "shipped recipe; any field can be overridden on the command line. On several processes: "
        "`accelerate launch -m hf_ssl train RECIPE ...`.",
        epilog=f"shipped recipes: {', '.join(shipped_recipes())}",
    )


@contextlib.contextmanager
def _process_group_destroyed() -> Iterator[None]:
    """Destroy the process group that Accelerate started (if any) when the command ends, however it ends, as
    PyTorch and Accelerate (`end_training`) ask, instead of leaving gloo's connections to interpreter shutdown."""
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _train(argv: list[str]) -> int:
    from .training import RecipeError, parse_args, train

    if any(flag in argv for flag in HELP_FLAGS):
        _train_parser().print_help()
        return 0
    try:
        if argv and not argv[0].startswith("-"):  # the recipe: a file, or a shipped recipe by name
            argv = [str(resolve_recipe(argv[0])), *argv[1:]]
        model_args, data_args, training_args = parse_args(argv)
    except (RecipeError, FileNotFoundError) as err:
        print(f"hf-ssl train: error: {err}", file=sys.stderr)
        return 2
    try:
        with _process_group_destroyed():
            train(model_args, data_args, training_args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # Configuration and data problems found at start-up: the message names the field, file or sample.
        print(f"hf-ssl train: error: {err}", file=sys.stderr)
        return 2
    return 0


def _evaluate(argv: list[str]) -> int:
    from transformers import HfArgumentParser

    from .evaluation.suite import EvaluationArguments, evaluate_checkpoint

    parser = HfArgumentParser(
        EvaluationArguments,
        prog="hf-ssl evaluate",
        description="Evaluate a pre-trained checkpoint on frozen features (kNN, linear and per-layer probes, "
        "clustering agreement, transfer) and write the results JSON.",
    )
    parser.allow_abbrev = False
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
        with _process_group_destroyed():
            results = evaluate_checkpoint(args)
    except (ValueError, FileNotFoundError, KeyError, OSError) as err:
        print(f"hf-ssl evaluate: error: {err}", file=sys.stderr)
        return 2
    print(results.format())
    print(f"results: {args.output_file}")
    return 0


def _card(argv: list[str]) -> int:
    from .hub import render_model_card

    parser = argparse.ArgumentParser(prog="hf-ssl card", description=f"Render {CARD_FILE} + plots into OUTPUT_DIR.")
    parser.add_argument("output_dir", help="The output_dir of a training run.")
    parser.add_argument("--repo-id", help="The repo the card will live in (used in the loading snippets).")
    args = parser.parse_args(argv)
    try:
        render_model_card(args.output_dir, repo_id=args.repo_id)
    except (ValueError, FileNotFoundError) as err:
        print(f"hf-ssl card: error: {err}", file=sys.stderr)
        return 2
    print(f"card: {pathlib.Path(args.output_dir) / CARD_FILE}")
    return 0


def _push(argv: list[str]) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    from .hub.push import push_to_hub

    parser = argparse.ArgumentParser(
        prog="hf-ssl push", description="Push a training output folder to the Hub (token: HF_TOKEN or `hf auth login`)."
    )
    parser.add_argument("output_dir", help="The output_dir of a finished training run.")
    parser.add_argument("--repo-id", required=True, help="The Hub repo to push to (namespace/name).")
    parser.add_argument("--revision", help="Branch to push to (created if missing); default main.")
    parser.add_argument(
        "--private", action="store_true", default=None, help="Create the repo private (an existing repo is kept)."
    )
    parser.add_argument("--commit-message", help="Default: 'Upload <folder> with hf_ssl'.")
    parser.add_argument(
        "--render-card",
        action="store_true",
        default=None,
        help=f"Re-render {CARD_FILE} even if it was edited by hand (default: keep an edited card).",
    )
    args = parser.parse_args(argv)
    try:
        commit = push_to_hub(
            args.output_dir,
            args.repo_id,
            revision=args.revision,
            private=args.private,
            commit_message=args.commit_message,
            render_card=args.render_card,
        )
    except (ValueError, FileNotFoundError, HfHubHTTPError) as err:
        # HfHubHTTPError's message names the URL and the server's reason; it never contains the token
        print(f"hf-ssl push: error: {err}", file=sys.stderr)
        return 2
    print(f"pushed {args.output_dir} to {args.repo_id}: revision {commit.oid}")
    return 0


def _convert(argv: list[str]) -> int:
    from .convert import SOURCES, convert_checkpoint

    parser = argparse.ArgumentParser(
        prog="hf-ssl convert",
        description="Convert an official checkpoint of a seed method into an hf_ssl checkpoint (config, safetensors, "
        "image processor, a card naming the source and its licence). Only tensors are read: safetensors, or "
        "torch.load(weights_only=True); a file holding pickled objects is refused.",
    )
    parser.add_argument(
        "--from", dest="source", required=True, choices=list(SOURCES), help="The official release's layout."
    )
    parser.add_argument("checkpoint", help="The official checkpoint file (.pth, .pth.tar, .pickle or .safetensors).")
    parser.add_argument("output_dir", help="Where to write the hf_ssl checkpoint.")
    args = parser.parse_args(argv)
    try:
        convert_checkpoint(args.source, args.checkpoint, args.output_dir)
    except (ValueError, FileNotFoundError) as err:
        print(f"hf-ssl convert: error: {err}", file=sys.stderr)
        return 2
    print(f"converted {args.checkpoint} ({args.source}) into {args.output_dir}")
    return 0


def _transitive_graph(argv: list[str]) -> int:
    from transformers import HfArgumentParser

    from .transitive import STATS_FILE, TransitiveGraphArguments, build_pair_dataset

    parser = HfArgumentParser(
        TransitiveGraphArguments,
        prog="hf-ssl transitive-graph",
        usage="hf-ssl transitive-graph OUTPUT_DIR [--field value ...]",
        description="Build the graph of transitive invariance (Wang et al. 2017: tracked moving patches, 4-cliques "
        "of a checkpoint's features, transitivity) and write it to OUTPUT_DIR as a parquet dataset of positive "
        f"pairs (train/*.parquet) with {STATS_FILE}.",
    )
    parser.allow_abbrev = False
    if not argv or argv[0].startswith("-"):
        if any(flag in argv for flag in HELP_FLAGS):
            parser.print_help()
            return 0
        print("hf-ssl transitive-graph: error: the first argument must be OUTPUT_DIR", file=sys.stderr)
        return 2
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv[1:])
        stats = build_pair_dataset(args, argv[0])
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"hf-ssl transitive-graph: error: {err}", file=sys.stderr)
        return 2
    print(f"pairs: {stats['edges']} ({stats['rows']} rows); cliques: {stats['cliques']}")
    print(f"clique purity: {stats['clique_purity']}; pair purity: {stats['pair_purity']}")
    print(f"dataset: {argv[0]}/train, statistics: {pathlib.Path(argv[0]) / STATS_FILE}")
    return 0


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "card": _card,
    "push": _push,
    "convert": _convert,
    "transitive-graph": _transitive_graph,
}
SUMMARIES = {
    "train": "pre-train a model from a recipe (a YAML file or a shipped recipe's name)",
    "evaluate": "evaluate a checkpoint on frozen features (kNN, linear probes, clustering, transfer)",
    "card": "write the model card (README.md + plots) of a training output folder",
    "push": "push a training output folder to the Hugging Face Hub",
    "convert": "convert an official checkpoint (DeepCluster, NPID, MoCo, SwAV, SimCLR, BYOL, C3D) to hf_ssl",
    "transitive-graph": "build transitive invariance's graph (tracks, 4-cliques, transitivity) as a pair dataset",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-ssl",
        description="Self-supervised visual representation learning as transformers models.",
        epilog="`hf-ssl COMMAND --help` lists the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, summary in SUMMARIES.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hf-ssl` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        _parser().parse_args(argv)  # --help and --version exit here; anything else is not a command
    except SystemExit as exit:  # argparse's --help (0) and usage errors (2)
        return exit.code if isinstance(exit.code, int) else 2
    _parser().print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
