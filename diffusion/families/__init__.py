"""Model families beyond the UNet ones: SD3/SD3.5 (MMDiT) and Flux.1, their facts and key layouts."""
