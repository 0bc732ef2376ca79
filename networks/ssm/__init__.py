"""SSM maths: selective scans (reference, fused CPU, Triton), Mamba1/Mamba2 mixers, SS2D; tensors in, tensors out."""
