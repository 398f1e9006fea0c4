"""`hf-ssl` command line: thin wrappers that parse arguments and call the library.

    hf-ssl train training_args/<recipe>.yaml [--field value ...]
    hf-ssl evaluate --model PATH_OR_REPO --dataset PATH_OR_ID [--protocols knn,linear,layers,nmi,transfer ...]

A bad recipe or argument ends with one line naming the problem (exit code 2), not a traceback.
"""

import logging
import sys

from .training import RecipeError, parse_args, train


def _train(argv: list[str]) -> int:
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
    return 0


def _evaluate(argv: list[str]) -> int:
    from transformers import HfArgumentParser

    from .evaluation.suite import EvaluationArguments, evaluate_checkpoint, format_results

    parser = HfArgumentParser(EvaluationArguments, prog="hf-ssl evaluate")
    parser.allow_abbrev = False
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
        results = evaluate_checkpoint(args)
    except (ValueError, FileNotFoundError, KeyError, OSError) as err:
        print(f"hf-ssl evaluate: error: {err}", file=sys.stderr)
        return 2
    print(format_results(results))
    print(f"results: {args.output_file}")
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate}


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
