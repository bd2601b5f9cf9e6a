"""A pack that needs a package that is not installed."""

import noodlebox_absent_package  # noqa: F401

NODE_CLASS_MAPPINGS = {}
