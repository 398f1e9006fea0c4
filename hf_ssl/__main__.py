"""`python -m hf_ssl ...` is `hf-ssl ...`; `accelerate launch -m hf_ssl train RECIPE` runs it on several processes."""

import sys

from .cli import main

sys.exit(main())
