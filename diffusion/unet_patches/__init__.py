"""Call-time patches of the UNet (``transformer_options["patches"]``): block hooks, FreeU, deep shrink."""
