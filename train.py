"""Pre-train a self-supervised model:

    accelerate launch train.py training_args/<recipe>.yaml [--field value ...]

(`python train.py ...` runs the same on one process.) See README.md and training_args/.
"""

import sys

from hf_ssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
