"""The aiohttp server, queue and history, file store, workers and the noodlebox CLI."""
