"""The files hf_ssl ships beside its code: the model card templates (`model_cards/`) and the recipes
(`training_args/`, with the blocks they include in `training_args/base/`).

A checkout keeps both at the repository root, next to the `hf_ssl` package; the wheel carries them inside the
package (`hf_ssl/model_cards`, `hf_ssl/training_args`: the `force-include` mapping in pyproject.toml). The package's
own copy wins, so an installed wheel never reads a folder that happens to sit next to site-packages. Imports
nothing heavy: the Hub side uses it.
"""

import importlib.resources
import os
import pathlib

TEMPLATES_FOLDER = "model_cards"
RECIPES_FOLDER = "training_args"
RECIPE_SUFFIXES = (".yaml", ".yml")


def shipped_dir(name: str) -> pathlib.Path:
    """`hf_ssl/<name>` of an installed wheel, else `<name>/` at the root of the checkout hf_ssl is imported from."""
    packaged = importlib.resources.files(__package__) / name
    if packaged.is_dir():
        # pip installs wheels unpacked: the package's resources are plain files with a path
        return pathlib.Path(str(packaged))
    return pathlib.Path(__file__).resolve().parents[1] / name


def templates_dir() -> pathlib.Path:
    """The model card templates: `modelcard_template.md` and `methods/<method>.md`."""
    return shipped_dir(TEMPLATES_FOLDER)


def recipes_dir() -> pathlib.Path:
    """The shipped recipes (`<name>.yaml`; `base/` holds the blocks they include)."""
    return shipped_dir(RECIPES_FOLDER)


def shipped_recipes() -> list[str]:
    """Names of the runnable shipped recipes (`hf-ssl train <name>`), sorted."""
    return sorted(path.stem for path in recipes_dir().iterdir() if path.suffix in RECIPE_SUFFIXES)


def resolve_recipe(recipe: str | os.PathLike) -> pathlib.Path:
    """A recipe file: `recipe` itself when it is a file, else the shipped recipe of that name (`quickstart` or
    `quickstart.yaml`). Raises FileNotFoundError naming both places looked in."""
    path = pathlib.Path(recipe)
    if path.is_file():
        return path
    stem = path.name.removesuffix(path.suffix) if path.suffix in RECIPE_SUFFIXES else path.name
    shipped = recipes_dir() / f"{stem}.yaml"
    if path.parent == pathlib.Path(".") and shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"recipe {str(recipe)!r} is neither a file nor a shipped recipe; shipped recipes: {', '.join(shipped_recipes())}"
    )
