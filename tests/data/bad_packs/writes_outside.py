"""A pack that writes outside its folder at import (next to tests/data)."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "..", "escaped_by_pack.txt"), "w") as f:
    f.write("escaped")
NODE_CLASS_MAPPINGS = {}
