"""Task models built on the memory: LocoTransformer/LocoMamba encoder, ViNT, VMamba, diffusion denoisers."""
