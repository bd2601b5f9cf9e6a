"""A pack that fails on import: it must be reported and skipped, and loading must go on."""

raise RuntimeError("this pack is broken on purpose")
