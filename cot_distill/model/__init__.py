"""The T5 student: configs, Flax network, model interface, decoding, checkpoints."""
