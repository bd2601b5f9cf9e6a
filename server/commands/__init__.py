"""noodlebox CLI subcommands, one module each."""
