"""The memory contract: make_memory and its kinds, the TensorDict recurrent module, the parity harness."""
