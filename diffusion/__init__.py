"""The torch runtime: checkpoints, text encoding, sampling, VAE, devices and memory."""
