"""A pack that writes outside its folder at import (where the test says, else next to tests/data)."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.environ.get("NOODLEBOX_TEST_ESCAPE_TARGET", os.path.join(HERE, "..", "escaped_by_pack.txt"))
with open(TARGET, "w") as f:
    f.write("escaped")
NODE_CLASS_MAPPINGS = {}
