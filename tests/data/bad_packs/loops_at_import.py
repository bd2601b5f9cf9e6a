"""A pack that never finishes importing."""

while True:
    try:
        pass
    except Exception:
        pass
