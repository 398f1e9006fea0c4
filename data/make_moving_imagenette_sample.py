"""Cut the small Moving Imagenette sample that ships with hf_ssl (video tests) from the full set.

    python data/make_moving_imagenette_sample.py ../shared/data/moving-imagenette data/moving-imagenette-sample

Copies the first clips (sorted by file name) of every class of each split, unchanged, in the videofolder layout
`<split>/<class>/<id>.mp4`, so `load_dataset("data/moving-imagenette-sample")` reads them.
"""

import argparse
import pathlib
import shutil

CLIPS_PER_CLASS = {"train": 6, "validation": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=pathlib.Path)
    parser.add_argument("target", type=pathlib.Path)
    args = parser.parse_args()
    for split, count in CLIPS_PER_CLASS.items():
        for class_dir in sorted(p for p in (args.source / split).iterdir() if p.is_dir()):
            target = args.target / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for clip in sorted(class_dir.glob("*.mp4"))[:count]:
                shutil.copyfile(clip, target / clip.name)
    shutil.copyfile(args.source / "README.md", args.target / "README.md")


if __name__ == "__main__":
    main()
