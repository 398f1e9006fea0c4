"""`hf-ssl` command line: thin wrappers that parse arguments and call the library.

    hf-ssl train training_args/<recipe>.yaml [--field value ...]
    hf-ssl evaluate --model PATH_OR_REPO --dataset_name PATH_OR_ID [--protocols knn,linear,layers,nmi,transfer ...]
    hf-ssl card OUTPUT_DIR [--repo-id ID]
    hf-ssl push OUTPUT_DIR --repo-id ID [--revision BRANCH] [--private] [--commit-message MSG]

A bad recipe or argument ends with one line naming the problem (exit code 2), not a traceback.
"""

import argparse
import logging
import pathlib
import sys

from .run_layout import CARD_FILE


def _train(argv: list[str]) -> int:
    from .training import RecipeError, parse_args, train

    try:
        model_args, data_args, training_args = parse_args(argv)
    except RecipeError as err:
        print(f"hf-ssl train: error: {err}", file=sys.stderr)
        return 2
    try:
        train(model_args, data_args, training_args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # Configuration and data problems found at start-up: the message names the field, file or sample.
        print(f"hf-ssl train: error: {err}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _evaluate(argv: list[str]) -> int:
    from transformers import HfArgumentParser

    from .evaluation.suite import EvaluationArguments, evaluate_checkpoint

    parser = HfArgumentParser(EvaluationArguments, prog="hf-ssl evaluate")
    parser.allow_abbrev = False
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
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
    parser.add_argument("output_dir")
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
    parser.add_argument("output_dir")
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--revision", help="Branch to push to (created if missing); default main.")
    parser.add_argument("--private", action="store_true", default=None)
    parser.add_argument("--commit-message")
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


COMMANDS = {"train": _train, "evaluate": _evaluate, "card": _card, "push": _push}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hf-ssl` console script."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: hf-ssl {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
